package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ms2m/ms2m/internal/lab/host"
	"github.com/ms2m/ms2m/internal/lab/node"
	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// Down stops exactly what Up started, by PID, and puts the host back as Up
// found it. It also cleans a lab that Up left half-made, and is a no-op
// when no lab exists.
func Down(ctx context.Context, dir string, o Options, keepState bool) error {
	p := newProgress(o.Out)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(p.w, "%s no lab in %s\n", p.stamp(), dir)
		return nil
	}
	c, err := Load(dir)
	if err != nil {
		// Up failed before it stored its configuration: the defaults name
		// the same places.
		if c, err = Default(); err != nil {
			return err
		}
		c.Dir = dir
	}
	var errs []error
	do := func(name string, f func() error) {
		if err := p.step(name, f); err != nil {
			errs = append(errs, err)
		}
	}
	sv := supervise.Open(c.RunDir())
	alive := sv.Ping(ctx) == nil
	do("kubelets", func() error {
		if !alive {
			return nil
		}
		return stopAll(ctx, sv, prefixed("kubelet-", c.Nodes), 20*time.Second)
	})
	do("pods (CRI stop and remove: CNI DEL, unmounts)", func() error {
		for _, n := range c.Nodes {
			sock := c.NodeParams(n).Socket()
			if c.Deps == nil || !alive || crictl(ctx, c, sock, "version") != nil {
				continue
			}
			if err := removePods(ctx, c, sock); err != nil {
				p.logf("%s: %v", n.Name, err)
			}
		}
		return nil
	})
	do("processes", func() error {
		if alive {
			// Each group stops in parallel; etcd goes last, its clients first.
			groups := [][]string{
				prefixed("containerd-", c.Nodes),
				{"kube-scheduler", "kube-controller-manager", "registry", "rabbitmq"},
				{"kube-apiserver"},
				{"etcd"},
			}
			for _, g := range groups {
				t := time.Now()
				if err := stopAll(ctx, sv, g, 20*time.Second); err != nil {
					p.logf("%v", err)
				}
				p.logf("stopped %s in %.1fs", strings.Join(g, ", "), time.Since(t).Seconds())
			}
			if err := sv.Shutdown(ctx, 10*time.Second); err != nil {
				p.logf("supervisor: %v", err)
			}
		}
		// Whatever a dead supervisor left: its records say which PIDs.
		killed, err := supervise.KillRecorded(c.RunDir())
		for _, k := range killed {
			p.logf("killed %s", k)
		}
		if err != nil {
			return err
		}
		for _, pid := range strays(c) {
			p.logf("killing stray pid %d (%s)", pid, cmdline(pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return nil
	})
	do("mounts", func() error {
		done, err := host.UnmountUnder(c.Dir)
		// and what a restore killed midway left in a node's staging tree
		// (CRIU's cgroup yard), should its container's delete not have run
		for _, n := range c.Nodes {
			more, merr := host.UnmountUnder(c.StagingDir(n.Name))
			done, err = append(done, more...), errors.Join(err, merr)
		}
		if len(done) > 0 {
			p.logf("unmounted %d", len(done))
		}
		return err
	})
	do("node directories (staged checkpoints, the agents' state and archives)", func() error {
		var es []error
		parents := map[string]bool{}
		for _, n := range c.Nodes {
			for _, d := range c.NodeHostDirs(n.Name) {
				es = append(es, os.RemoveAll(d))
				parents[filepath.Dir(d)] = true
			}
		}
		// Emptied parents go too, and their parent once empty (/var/lib/ms2m
		// is the lab's where it did not exist before: see host.HostDirs).
		for d := range parents {
			if os.Remove(d) == nil {
				_ = os.Remove(filepath.Dir(d))
			}
		}
		return errors.Join(es...)
	})
	do("cgroups", func() error {
		var es []error
		for _, n := range c.Nodes {
			es = append(es, node.RemoveCgroupRoot(n.CgroupRoot))
		}
		return errors.Join(es...)
	})
	do("network (pod veths, routes, CRIU nft tables)", func() error {
		links, err := host.RemovePodLinks(ctx, c.Subnets())
		if len(links) > 0 {
			p.logf("removed links %v", links)
		}
		if err != nil {
			return err
		}
		removeCNICache(c)
		if c.Deps != nil {
			tables, err := host.RemoveCRIUTables(ctx, c.Deps.Nft)
			if len(tables) > 0 {
				p.logf("removed nft tables %v", tables)
			}
			return err
		}
		return nil
	})
	do("host settings", func() error {
		rec := c.HostRecordDir()
		es := []error{
			host.RestoreFile(filepath.Join(rec, "runc-criu-conf.json")),
			host.RestoreSysctls(filepath.Join(rec, "sysctls.json")),
		}
		removed, err := host.RemoveNewHostDirs(filepath.Join(rec, "absent-dirs.json"))
		if len(removed) > 0 {
			p.logf("removed %v (created by the lab)", removed)
		}
		return errors.Join(append(es, err)...)
	})
	if len(errs) > 0 {
		return fmt.Errorf("down left work undone, %s kept for a second `down`: %w", c.Dir, errors.Join(errs...))
	}
	if keepState {
		fmt.Fprintf(p.w, "%s lab is down; state kept in %s\n", p.stamp(), c.Dir)
		return nil
	}
	if err := p.step("state directory", func() error { return os.RemoveAll(c.Dir) }); err != nil {
		return err
	}
	fmt.Fprintf(p.w, "%s lab is down\n", p.stamp())
	return nil
}

func prefixed(prefix string, nodes []Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, prefix+n.Name)
	}
	return out
}

// graces overrides the stop grace period: the lab's broker holds nothing
// worth its 6 s clean shutdown.
var graces = map[string]time.Duration{"rabbitmq": time.Second}

// stopAll stops the named processes that run, in parallel.
func stopAll(ctx context.Context, sv *supervise.Client, names []string, grace time.Duration) error {
	st, err := sv.State(ctx)
	if err != nil {
		return err
	}
	errc := make(chan error, len(names))
	n := 0
	for _, name := range names {
		for _, p := range st.Procs {
			if p.Name == name && p.Alive() {
				n++
				g := grace
				if o, ok := graces[name]; ok {
					g = o
				}
				go func() { _, err := sv.Stop(ctx, name, g); errc <- err }()
			}
		}
	}
	var errs []error
	for range n {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// removePods stops and removes every pod sandbox through the CRI, so that
// containerd runs CNI DEL (veth, route, IP) and unmounts what it mounted.
func removePods(ctx context.Context, c *Config, sock string) error {
	ep := "unix://" + sock
	cmd := exec.CommandContext(ctx, c.Deps.Crictl, "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s", "pods", "-q")
	out, err := cmd.Output()
	if err != nil {
		return err
	}
	for _, id := range strings.Fields(string(out)) {
		_ = crictl(ctx, c, sock, "stopp", id)
	}
	return crictl(ctx, c, sock, "rmp", "-fa")
}

// strays are processes still running binaries of the lab's own
// directories, or living in a node's cgroups, after the supervisor and its records are done: pods and
// shims orphaned by a supervisor that was killed.
func strays(c *Config) []int {
	// Not the Kubernetes binaries' directory: envtest runs its
	// kube-apiserver and etcd from there too.
	roots := []string{c.Dir + "/", filepath.Join(c.Cache, "lab") + "/"}
	seen := map[int]bool{}
	var out []int
	add := func(pid int) {
		if pid != os.Getpid() && !seen[pid] {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		for _, r := range roots {
			if strings.HasPrefix(exe, r) {
				add(pid)
			}
		}
	}
	for _, n := range c.Nodes {
		for _, pid := range node.CgroupProcs(n.CgroupRoot) {
			add(pid)
		}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	s := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return s
}

// removeCNICache drops libcni's cached results of the lab's networks: the
// cache lives in /var/lib/cni whatever the runtime's configuration says.
func removeCNICache(c *Config) {
	for _, n := range c.Nodes {
		net := c.NodeParams(n).NetworkName()
		for _, pat := range []string{"/var/lib/cni/results/" + net + "-*", "/var/lib/cni/networks/" + net} {
			m, _ := filepath.Glob(pat)
			for _, f := range m {
				_ = os.RemoveAll(f)
			}
		}
	}
}
