package deps

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Container runtime releases the lab builds from the Go module proxy: the
// releases a cluster installed now runs, which Debian does not ship yet.
const (
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"
)

// Runtime is a container runtime the lab can run its nodes on.
type Runtime struct {
	// Series is what users pick: "2.4" (default) or "2.1".
	Series        string `json:"series"`
	ContainerdBin string `json:"containerdBin"` // directory of containerd and its runc shim
	Runc          string `json:"runc"`
}

// Runtimes the lab knows, by series.
var RuntimeSeries = []string{"2.4", "2.1"}

// EnsureRuntime returns the binaries of a runtime series. "2.1" is
// Debian's containerd 2.1 with bookworm's runc 1.1 (fetched by Ensure):
// the release whose CreateContainer still restores checkpoints. "2.4" is
// containerd and runc built from the module proxy (about 4 min the first
// time on two cores), cached by version; runc is built with seccomp, as
// distributions build it.
func EnsureRuntime(ctx context.Context, cache, series string, debs *Paths, logf func(string, ...any)) (Runtime, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	switch series {
	case "2.1":
		return Runtime{Series: series, ContainerdBin: debs.ContainerdBin, Runc: debs.Runc}, nil
	case "2.4":
	default:
		return Runtime{}, fmt.Errorf("containerd %q: the lab runs %v", series, RuntimeSeries)
	}
	dir := filepath.Join(cache, "lab", "runtimes")
	rt := Runtime{Series: series,
		ContainerdBin: filepath.Join(dir, "containerd-"+ContainerdVersion),
		Runc:          filepath.Join(dir, "runc-"+RuncVersion, "runc")}
	if !allExist(filepath.Join(rt.ContainerdBin, "containerd"), filepath.Join(rt.ContainerdBin, "containerd-shim-runc-v2"), filepath.Join(rt.ContainerdBin, "ctr")) {
		logf("go install github.com/containerd/containerd/v2/cmd/{containerd,containerd-shim-runc-v2,ctr}@%s", ContainerdVersion)
		m := "github.com/containerd/containerd/v2/cmd/"
		if err := goInstall(ctx, rt.ContainerdBin, []string{m + "containerd@" + ContainerdVersion,
			m + "containerd-shim-runc-v2@" + ContainerdVersion, m + "ctr@" + ContainerdVersion}, nil, logf); err != nil {
			_ = os.RemoveAll(rt.ContainerdBin)
			return Runtime{}, err
		}
	}
	if !allExist(rt.Runc) {
		// cgo and libseccomp-dev: runc without seccomp refuses every pod
		// with a seccomp profile (RuntimeDefault).
		if err := ensureBuildPackages(ctx, logf); err != nil {
			return Runtime{}, err
		}
		logf("go install -tags seccomp github.com/opencontainers/runc@%s", RuncVersion)
		if err := goInstall(ctx, filepath.Dir(rt.Runc), []string{"-tags", "seccomp", "github.com/opencontainers/runc@" + RuncVersion}, []string{"CGO_ENABLED=1"}, logf); err != nil {
			_ = os.RemoveAll(filepath.Dir(rt.Runc))
			return Runtime{}, fmt.Errorf("%w (runc needs gcc, pkg-config and libseccomp-dev)", err)
		}
	}
	return rt, nil
}

// buildPackages are what runc's cgo build needs from the system.
var buildPackages = []string{"gcc", "pkg-config", "libseccomp-dev"}

// ensureBuildPackages installs the Debian packages runc's build needs
// (the only system packages the lab installs besides rabbitmq-server).
func ensureBuildPackages(ctx context.Context, logf func(string, ...any)) error {
	if exec.CommandContext(ctx, "pkg-config", "--exists", "libseccomp").Run() == nil {
		if _, err := exec.LookPath("gcc"); err == nil {
			return nil
		}
	}
	logf("apt-get install %s", strings.Join(buildPackages, " "))
	return AptInstall(ctx, buildPackages...)
}

// AptInstall installs Debian packages from the system's sources,
// refreshing the package lists once if the first try fails (a fresh
// machine may have none).
func AptInstall(ctx context.Context, pkgs ...string) error {
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-q"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(pkgs, " "), err, tail(out))
		}
		return nil
	}
	if install() == nil {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %w: %s", err, tail(out))
	}
	return install()
}

// tail keeps the end of a command's output, where apt says what failed.
func tail(b []byte) string {
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}

func allExist(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}
