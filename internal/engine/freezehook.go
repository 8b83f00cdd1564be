package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ms2m/ms2m/internal/criuhook"
)

// FindFreezeHook says whether runc's CRIU configuration on the host
// (criuConfig, a host path) runs ms2m's freeze hook as an action script
// (see criuhook), and why not.
func FindFreezeHook(hostRoot, criuConfig string) Capability {
	local := func(p string) string { return filepath.Join(hostRoot, p) }
	b, err := os.ReadFile(local(criuConfig))
	if err != nil {
		return Capability{Reason: fmt.Sprintf("runc's CRIU configuration: %v", err)}
	}
	opts, _ := ParseCRIUConfig(b)
	for _, o := range opts {
		if o.Name != "action-script" || len(o.Args) != 1 {
			continue
		}
		script, err := os.ReadFile(local(o.Args[0]))
		if err == nil && bytes.Contains(script, []byte(criuhook.Marker)) {
			return Capability{OK: true, Reason: fmt.Sprintf("%s runs ms2m's freeze hook %s: a container is frozen once runc and CRIU have started", criuConfig, o.Args[0])}
		}
	}
	return Capability{Reason: fmt.Sprintf("%s names no ms2m freeze hook (action-script; `ms2m runtime-handler-config criu-hook`): runc's and CRIU's start-up is part of each freeze", criuConfig)}
}

// CRIUOption is one option of a CRIU configuration file: its name without
// leading dashes, its arguments, and the line as written.
type CRIUOption struct {
	Name string
	Args []string
	Line string
}

// ParseCRIUConfig reads the options of a CRIU configuration file, one per
// line, skipping blank lines and comments.
func ParseCRIUConfig(b []byte) ([]CRIUOption, error) {
	var opts []CRIUOption
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		opts = append(opts, CRIUOption{Name: strings.TrimPrefix(f[0], "--"), Args: f[1:], Line: line})
	}
	return opts, sc.Err()
}

// freezerOf is the cgroup whose freezer holds the container, from runc's
// state: a cgroup v1 freezer where runc uses one (a hybrid host also
// lists the unified hierarchy), else its cgroup v2 directory.
func (r Runc) freezerOf(id string) (criuhook.Request, error) {
	b, err := os.ReadFile(r.local(filepath.Join(r.Root, id, "state.json")))
	if err != nil {
		return criuhook.Request{}, fmt.Errorf("runc state of %s: %w", id, err)
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return criuhook.Request{}, fmt.Errorf("runc state of %s: %w", id, err)
	}
	if d := st.CgroupPaths["freezer"]; d != "" {
		return criuhook.Request{Dir: d}, nil
	}
	if d := st.CgroupPaths[""]; d != "" {
		return criuhook.Request{Dir: d, V2: true}, nil
	}
	return criuhook.Request{}, fmt.Errorf("runc state of %s names no cgroup", id)
}

// dumpFrozenByHook dumps one container that ms2m's freeze hook freezes at
// CRIU's pre-dump, and resumes it once its root file system's changes are
// written: its freeze no longer holds runc's and CRIU's start-up.
func (r Runc) dumpFrozenByHook(ctx context.Context, m member) (dumped, error) {
	q, err := r.freezerOf(m.c.ID)
	if err != nil {
		return dumped{}, err
	}
	images := r.local(m.images)
	if err := criuhook.Ask(images, q); err != nil {
		return dumped{}, fmt.Errorf("asking the freeze hook for %s: %w", m.c, err)
	}
	// Neither file is CRIU's: they do not go into the archive.
	defer func() { _ = criuhook.Clear(images) }()
	fail := func(err error) (dumped, error) {
		// never left frozen: Release resumes a paused container
		return dumped{}, errors.Join(err, r.Release(context.WithoutCancel(ctx), m.c.ID))
	}
	start := time.Now()
	err = r.criuDump(ctx, m.c, m.ns, m.images, m.work)
	dumpEnd := time.Now()
	frozenAt, frozen, ferr := criuhook.FrozenAt(images)
	if err != nil {
		return fail(err)
	}
	if ferr != nil || !frozen {
		// CRIU froze it itself and let it run on after the dump, before
		// its root file system's changes could be written.
		return fail(fmt.Errorf("the freeze hook did not freeze %s (%v): check the action-script of runc's CRIU configuration", m.c, ferr))
	}
	steps := Steps{{"start-up", frozenAt.Sub(start)}, {"dump", dumpEnd.Sub(frozenAt)}}
	if err := steps.Time("rootfs", func() error { return r.writeRootfsDiff(m.st, m.rootfs) }); err != nil {
		return fail(fmt.Errorf("root file system changes of %s: %w", m.c, err))
	}
	if err := steps.Time("resume", func() error { return r.run(context.WithoutCancel(ctx), m.ns, "resume", m.c.ID) }); err != nil {
		return fail(fmt.Errorf("resuming %s: %w", m.c, err))
	}
	return dumped{freeze: time.Since(frozenAt), steps: steps, stats: r.dumpStats(m)}, nil
}
