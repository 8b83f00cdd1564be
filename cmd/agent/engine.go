package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/runtimehandler"
)

// runcEngine sets up the runc engine from the flags, or says why the node
// cannot have it (the kubelet's checkpoint API remains).
func runcEngine(hostRoot, node, runc, root, criu, dumpDir, archiveDir, handlerName, handlerBinary string) (engine.Engine, string) {
	sub := func(p string) string { return strings.ReplaceAll(p, "{node}", node) }
	if runc == "" {
		runc = findRunc(hostRoot, handlerName, sub(handlerBinary))
	}
	if runc == "" {
		return nil, "no runc found on the host (set --runc to the container runtime's runc)"
	}
	r := engine.Runc{HostRoot: hostRoot, Runc: sub(runc), Root: sub(root), CRIU: sub(criu), DumpDir: sub(dumpDir), ArchiveDir: sub(archiveDir)}
	if err := r.Check(); err != nil {
		return nil, err.Error()
	}
	for _, d := range []string{r.DumpDir, r.ArchiveDir} {
		if err := os.MkdirAll(filepath.Join(hostRoot, d), 0o700); err != nil {
			return nil, "dump directory: " + err.Error()
		}
	}
	where := "dumps to tmpfs at " + r.DumpDir
	if tmpfs, err := r.MemoryBacked(); err != nil || !tmpfs {
		where = "dumps to disk at " + r.DumpDir + " (not tmpfs: the source stays frozen while its whole memory is written to disk)"
	}
	return r, "the agent dumps with " + r.Runc + " (state root " + r.Root + "), " + where + ", and can hold a source frozen"
}

// findRunc is the runc that ms2m's runtime handler hands calls to (the
// runtime's own), else the first runc in the host's usual directories.
func findRunc(hostRoot, handlerName, handlerBinary string) string {
	if handlerName != "" {
		if c, err := runtimehandler.LoadConfig(runtimehandler.ConfigPath(filepath.Join(hostRoot, handlerBinary))); err == nil && filepath.IsAbs(c.Runc) {
			return c.Runc
		}
	}
	p, err := engine.FindHostBinary(hostRoot, "runc")
	if err != nil {
		return ""
	}
	return p
}
