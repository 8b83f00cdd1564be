package deps

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// installCrictl compiles crictl (1-3 min on two cores from an empty build
// cache).
func installCrictl(ctx context.Context, bin string, logf func(string, ...any)) error {
	return goInstall(ctx, bin, []string{"sigs.k8s.io/cri-tools/cmd/crictl@" + CrictlVersion}, []string{"CGO_ENABLED=0"}, logf)
}

// goInstall builds pkgs (module@version) into bin, reporting every 30 s
// that it still runs.
func goInstall(ctx context.Context, bin string, pkgs, env []string, logf func(string, ...any)) error {
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"install"}, pkgs...)...)
	cmd.Dir = bin
	// GOFLAGS=-mod=mod of the project's Makefile is refused outside a module.
	cmd.Env = append(append(os.Environ(), "GOBIN="+bin, "GOFLAGS="), env...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		t0 := time.Now()
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				logf("  ... still compiling %s (%s)", strings.Join(pkgs, " "), time.Since(t0).Round(time.Second))
			}
		}
	}()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s: %w: %s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// KubeOptions of Kube.
type KubeOptions struct {
	Version string
	Cache   string
	// Script is hack/kube-binaries.sh of the repository; empty when the
	// lab runs outside one, and then only an existing build is used.
	Script string
	// Commands are the binaries to build (default KubeCommands).
	Commands []string
	Logf     func(format string, args ...any)
}

// KubeCommands are the Kubernetes binaries the lab runs.
var KubeCommands = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kubelet"}

// Kube returns the directory of the Kubernetes binaries, building them with
// the repository's script (it caches them by version and link flags, and
// the envtest assets share that cache). The first build takes 11-15 min on
// two cores: a ticker reports progress meanwhile.
func Kube(ctx context.Context, o KubeOptions) (string, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Commands == nil {
		o.Commands = KubeCommands
	}
	if o.Script == "" {
		dir := filepath.Join(o.Cache, "k8s", o.Version, "bin")
		for _, c := range o.Commands {
			if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
				return "", fmt.Errorf("%s %s is not built and hack/kube-binaries.sh is not found: run ms2m from the repository", c, o.Version)
			}
		}
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, o.Script, o.Version)
	cmd.Env = append(os.Environ(), "MS2M_CACHE="+o.Cache, "MS2M_KUBE_CMDS="+strings.Join(o.Commands, " "))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		return "", err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var last []string
	t0, step := time.Now(), time.Now()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	current := ""
	for open := true; open; {
		select {
		case l, ok := <-lines:
			if !ok {
				open = false
				break
			}
			last = append(last, l)
			if len(last) > 20 {
				last = last[1:]
			}
			if strings.HasPrefix(l, "[kube-binaries]") {
				o.Logf("%s", strings.TrimSpace(strings.TrimPrefix(l, "[kube-binaries]")))
				current, step = l, time.Now()
			}
		case <-tick.C:
			if current != "" {
				o.Logf("  ... still at %q: %s (total %s)", strings.TrimPrefix(current, "[kube-binaries] "),
					time.Since(step).Round(time.Second), time.Since(t0).Round(time.Second))
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", o.Script, o.Version, err, strings.Join(last, "\n"))
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", errors.New("kube-binaries.sh printed no directory")
	}
	return dir, nil
}
