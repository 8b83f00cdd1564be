package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/ms2m/ms2m/internal/criuhook"
	"github.com/ms2m/ms2m/internal/images"
	"github.com/ms2m/ms2m/internal/lab/controlplane"
	"github.com/ms2m/ms2m/internal/lab/deps"
	"github.com/ms2m/ms2m/internal/lab/host"
	"github.com/ms2m/ms2m/internal/lab/node"
	"github.com/ms2m/ms2m/internal/lab/pki"
	"github.com/ms2m/ms2m/internal/lab/probe"
	"github.com/ms2m/ms2m/internal/lab/rabbitmq"
	"github.com/ms2m/ms2m/internal/lab/registry"
	"github.com/ms2m/ms2m/internal/lab/supervise"
	"k8s.io/client-go/kubernetes"
)

// Options of Up and Down.
type Options struct {
	Out io.Writer
	// Repo is the source tree (for the Kubernetes build and the images);
	// found from the working directory when empty.
	Repo string
	// NoRuntimeHandler leaves ms2m's runtime handler off the nodes (a lab
	// that tests the path without it).
	NoRuntimeHandler bool
}

// LabImages are the images `up` pushes: the sandbox image both nodes are
// pinned to, and the test workload.
var LabImages = []images.App{
	{Name: "pause", Package: Module + "/internal/lab/apps/pause"},
	{Name: "counter", Package: Module + "/internal/lab/apps/counter"},
}

// Up brings the lab up, from nothing or from whatever part already runs;
// what runs and is healthy is left alone.
func Up(ctx context.Context, c *Config, o Options) error {
	p := newProgress(o.Out)
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (cgroups, mounts, network namespaces)")
	}
	if o.Repo == "" {
		o.Repo, _ = RepoRoot()
	}
	for _, tool := range []string{"ip", "go", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed and not in PATH", tool)
		}
	}
	if err := sameRuntimeAsRunning(ctx, c); err != nil {
		return err
	}
	if err := p.step("state directory "+c.Dir, func() error { return prepareDir(c) }); err != nil {
		return err
	}
	var sv *supervise.Client
	steps := []struct {
		name string
		f    func() error
	}{
		{"Kubernetes " + c.KubeVersion + " binaries", func() error {
			bin, err := deps.Kube(ctx, deps.KubeOptions{Version: c.KubeVersion, Cache: c.Cache, Script: kubeScript(o.Repo), Logf: p.logf})
			c.KubeBin = bin
			return err
		}},
		{"runtime packages (CRIU, containerd, runc, CNI, registry, crictl)", func() error {
			paths, m, err := deps.Ensure(ctx, deps.Options{Cache: c.Cache, Logf: p.logf})
			if err != nil {
				return err
			}
			c.Deps = paths
			for _, i := range m.Packages {
				if i.Name == "criu" || i.Name == "containerd" || i.Name == "runc" {
					p.logf("%s %s (%s)", i.Name, i.Version, i.Suite)
				}
			}
			return c.save()
		}},
		{"containerd " + c.Containerd, func() error {
			rt, err := deps.EnsureRuntime(ctx, c.Cache, c.Containerd, c.Deps, p.logf)
			if err != nil {
				return err
			}
			c.Runtime = &rt
			return c.save()
		}},
		{"ms2m runtime handler", func() error {
			if o.NoRuntimeHandler {
				c.RuntimeHandler = ""
				p.logf("not installed (asked so): nodes restore only checkpoint images, where their containerd does")
				return c.save()
			}
			if o.Repo == "" {
				p.logf("not built (no source tree): nodes get no ms2m runtime handler")
				return nil
			}
			bin, err := buildRuntimeHandler(ctx, c, o.Repo)
			if err != nil {
				return err
			}
			c.RuntimeHandler = bin
			return c.save()
		}},
		{"kubectl and the kubectl migrate plugin", func() error { return installTools(ctx, c, o.Repo, p.logf) }},
		{"rabbitmq-server " + rabbitmq.Version(), func() error {
			root, err := rabbitmq.Install(ctx, p.logf, o.Repo)
			if err != nil {
				return err
			}
			c.RabbitMQRoot = root
			return c.save()
		}},
		{"host settings (CRIU options for runc, pipe size)", func() error { return configureHost(c) }},
		{"ports", func() error { return checkPorts(ctx, c) }},
		{"PKI", func() error {
			spec := pkiSpec(c)
			if spec.Complete() {
				p.logf("kept")
				return nil
			}
			return pki.Generate(spec)
		}},
		{"supervisor", func() (err error) {
			sv, err = supervise.Ensure(ctx, c.RunDir())
			return err
		}},
		{"registry " + c.Registry(), func() error {
			rp := c.RegistryParams()
			if err := registry.Prepare(rp); err != nil {
				return err
			}
			if err := ensure(ctx, sv, registry.Spec(rp)); err != nil {
				return err
			}
			return waitFor(ctx, sv, "registry", 30*time.Second, func(ctx context.Context) error { return registry.Healthy(ctx, c.Registry()) })
		}},
		{"RabbitMQ (starting)", func() error {
			rp := c.RabbitMQ()
			if rabbitmq.Healthy(ctx, rp) == nil {
				return nil
			}
			uid, gid, err := rabbitmq.Prepare(rp)
			if err != nil {
				return err
			}
			return ensure(ctx, sv, rabbitmq.Spec(rp, uid, gid))
		}},
		{"images (pause, counter)", func() error { return pushLabImages(ctx, c, o.Repo, p) }},
		{"etcd", func() error {
			cp := c.ControlPlane()
			if err := os.MkdirAll(cp.Dir, 0o700); err != nil {
				return err
			}
			if err := ensure(ctx, sv, cp.Etcd()); err != nil {
				return err
			}
			return waitFor(ctx, sv, "etcd", time.Minute, func(ctx context.Context) error {
				return controlplane.Probe(ctx, controlplane.InsecureHTTP, fmt.Sprintf("http://127.0.0.1:%d/health", c.Ports.Etcd))
			})
		}},
		{"kube-apiserver", func() error {
			if err := ensure(ctx, sv, c.ControlPlane().APIServer()); err != nil {
				return err
			}
			hc, err := controlplane.HTTPClient(c.PKIDir())
			if err != nil {
				return err
			}
			return waitFor(ctx, sv, "kube-apiserver", 3*time.Minute, func(ctx context.Context) error {
				return controlplane.Probe(ctx, hc, c.APIServerURL()+"/readyz")
			})
		}},
		{"kube-controller-manager, kube-scheduler", func() error {
			cp := c.ControlPlane()
			if err := ensure(ctx, sv, cp.ControllerManager()); err != nil {
				return err
			}
			if err := ensure(ctx, sv, cp.Scheduler()); err != nil {
				return err
			}
			for name, port := range map[string]int{"kube-controller-manager": c.Ports.ControllerMg, "kube-scheduler": c.Ports.Scheduler} {
				url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
				if err := waitFor(ctx, sv, name, 2*time.Minute, func(ctx context.Context) error {
					return controlplane.Probe(ctx, controlplane.InsecureHTTP, url)
				}); err != nil {
					return err
				}
			}
			cs, err := c.Clientset()
			if err != nil {
				return err
			}
			return waitFor(ctx, sv, "kube-controller-manager", 2*time.Minute, func(ctx context.Context) error { return podsCanBeCreated(ctx, cs) })
		}},
		{"nodes", func() error { return startNodes(ctx, c, sv, p) }},
		{"RabbitMQ ready", func() error {
			return waitFor(ctx, sv, "rabbitmq", 2*time.Minute, func(ctx context.Context) error { return rabbitmq.Healthy(ctx, c.RabbitMQ()) })
		}},
		{"capabilities", func() error {
			r := probeNode(ctx, c)
			for _, l := range r.Summary() {
				p.logf("%s", l)
			}
			return r.Write(c.CapabilitiesFile())
		}},
	}
	for _, s := range steps {
		if err := p.step(s.name, s.f); err != nil {
			return fmt.Errorf("%w\n(`ms2m lab down` cleans a half-made lab; logs are in %s)", err, c.LogDir())
		}
	}
	fmt.Fprintf(p.w, "%s lab is up: 2 nodes Ready\n", p.stamp())
	return nil
}

// sameRuntimeAsRunning refuses to bring up nodes on another containerd than
// the one the lab's running nodes use: `up` leaves what runs alone, so the
// nodes would go on running the old one while lab.json named the new one.
func sameRuntimeAsRunning(ctx context.Context, c *Config) error {
	prev, err := Load(c.Dir)
	if err != nil || prev.Containerd == "" || prev.Containerd == c.Containerd {
		return nil
	}
	st, err := supervise.Open(c.RunDir()).State(ctx)
	if err != nil {
		return nil
	}
	for _, p := range st.Procs {
		if strings.HasPrefix(p.Name, "containerd-") && p.Alive() {
			return fmt.Errorf("the lab's nodes run containerd %s: `ms2m lab down` first to switch them to %s", prev.Containerd, c.Containerd)
		}
	}
	return nil
}

func prepareDir(c *Config) error {
	for _, d := range []string{c.Dir, c.RunDir(), c.LogDir(), c.HostRecordDir(), c.PathDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// rabbitmq runs as its own user and must traverse the state directory.
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return err
	}
	// Recorded before anything of the lab runs, and only once, so that a
	// second `up` does not take the lab's own changes for the host's state.
	if err := host.RecordHostDirs(filepath.Join(c.HostRecordDir(), "absent-dirs.json")); err != nil {
		return err
	}
	if err := host.SaveSysctls(filepath.Join(c.HostRecordDir(), "sysctls.json"), host.KubeletSysctls); err != nil {
		return err
	}
	return c.save()
}

// configureHost installs runc's CRIU options (with ms2m's freeze hook)
// and the criu wrapper that containerd's PATH finds, and raises
// fs.pipe-max-size: without CAP_SYS_RESOURCE, CRIU's lazy-pages pipes
// need 4 MiB.
func configureHost(c *Config) error {
	// ms2m's freeze hook, which runs the lab's ms2m-runtime (built below)
	// only for the dumps the agents ask it to freeze.
	hook := filepath.Join(c.PathDir(), "ms2m-criu-hook")
	if err := os.WriteFile(hook, []byte(criuhook.Script(filepath.Join(c.PathDir(), "ms2m-runtime"))), 0o755); err != nil {
		return err
	}
	if err := host.InstallFile(filepath.Join(c.HostRecordDir(), "runc-criu-conf.json"), host.RuncCRIUConf, []byte(host.RuncCRIUOptions+"action-script "+hook+"\n")); err != nil {
		return err
	}
	conf := filepath.Join(c.PathDir(), "criu.conf")
	if err := os.WriteFile(conf, []byte("network-lock nftables\n"), 0o644); err != nil {
		return err
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nexport CRIU_CONFIG_FILE=%s\nexec %s \"$@\"\n", conf, c.Deps.CRIU)
	if err := os.WriteFile(filepath.Join(c.PathDir(), "criu"), []byte(wrapper), 0o755); err != nil {
		return err
	}
	// crictl and nft next to it, for people debugging the lab with its env.
	for name, target := range map[string]string{"crictl": c.Deps.Crictl, "nft": c.Deps.Nft} {
		l := filepath.Join(c.PathDir(), name)
		_ = os.Remove(l)
		if err := os.Symlink(target, l); err != nil {
			return err
		}
	}
	if v, _ := host.ReadSysctl("fs.pipe-max-size"); atoi(v) < 4<<20 {
		if err := host.WriteSysctl("fs.pipe-max-size", "4194304"); err != nil {
			return err
		}
	}
	return mountDumps(c)
}

// mountDumps gives the agents a memory-backed dump directory, as /run is
// on a systemd node: CRIU writes the source's whole memory there while it
// is frozen. It is mounted before the agents start (their /host is a
// recursive bind of the host's root taken then), and lab down unmounts it
// with everything else under the lab's directory.
func mountDumps(c *Config) error {
	dir := c.DumpsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if mounted, err := mountinfo.Mounted(dir); err != nil || mounted {
		return err
	}
	return unix.Mount("ms2m-dumps", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700,size=8g")
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func pkiSpec(c *Config) pki.LabSpec {
	var nodes []string
	for _, n := range c.Nodes {
		nodes = append(nodes, n.Name)
	}
	return pki.LabSpec{Dir: c.PKIDir(), HostIP: net.ParseIP(c.HostIP), APIServer: c.APIServerURL(), Nodes: nodes}
}

// ensure starts s unless a process of that name runs.
func ensure(ctx context.Context, sv *supervise.Client, s supervise.Spec) error {
	st, err := sv.State(ctx)
	if err != nil {
		return err
	}
	for _, p := range st.Procs {
		if p.Name == s.Name && p.Alive() {
			return nil
		}
	}
	_, err = sv.Start(ctx, s)
	return err
}

// checkPorts fails early, and clearly, when another program holds a port
// the lab needs; ports held by the lab's own processes are fine.
func checkPorts(ctx context.Context, c *Config) error {
	sv := supervise.Open(c.RunDir())
	ours := map[string]bool{}
	if st, err := sv.State(ctx); err == nil {
		for _, p := range st.Procs {
			if p.Alive() {
				ours[p.Name] = true
			}
		}
	}
	type port struct {
		owner string
		addr  string
	}
	ports := []port{
		{"kube-apiserver", fmt.Sprintf(":%d", c.Ports.APIServer)},
		{"etcd", fmt.Sprintf("127.0.0.1:%d", c.Ports.Etcd)},
		{"etcd", fmt.Sprintf("127.0.0.1:%d", c.Ports.EtcdPeer)},
		{"registry", fmt.Sprintf(":%d", c.Ports.Registry)},
		{"rabbitmq", fmt.Sprintf("%s:%d", c.HostIP, c.Ports.AMQP)},
		{"rabbitmq", fmt.Sprintf("%s:%d", c.HostIP, c.Ports.AMQPMgmt)},
		{"kube-controller-manager", fmt.Sprintf("127.0.0.1:%d", c.Ports.ControllerMg)},
		{"kube-scheduler", fmt.Sprintf("127.0.0.1:%d", c.Ports.Scheduler)},
	}
	for _, n := range c.Nodes {
		ports = append(ports, port{"kubelet-" + n.Name, fmt.Sprintf(":%d", n.KubeletPort)}, port{"kubelet-" + n.Name, fmt.Sprintf("127.0.0.1:%d", n.HealthzPort)})
	}
	for _, pt := range ports {
		if ours[pt.owner] {
			continue
		}
		l, err := net.Listen("tcp", pt.addr)
		if err != nil {
			return fmt.Errorf("port %s, needed by the lab's %s, is taken by another program: %w", pt.addr, pt.owner, err)
		}
		l.Close()
	}
	return nil
}

func pushLabImages(ctx context.Context, c *Config, repo string, p *progress) error {
	if repo == "" {
		return errors.New("the lab's images are built from the source tree: run ms2m from it or set MS2M_REPO")
	}
	work := c.path("images")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	for _, app := range LabImages {
		d, err := images.BuildAndPush(ctx, repo, app, c.Registry(), "latest", work)
		if err != nil {
			return err
		}
		p.logf("%s", d)
	}
	return nil
}

func startNodes(ctx context.Context, c *Config, sv *supervise.Client, p *progress) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	hosts := filepath.Join(c.path("certs.d"), c.Registry())
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(node.HostsTOML(c.Registry())), 0o644); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = startNode(ctx, c, sv, cs, n, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func startNode(ctx context.Context, c *Config, sv *supervise.Client, cs *kubernetes.Clientset, n Node, p *progress) error {
	np := c.NodeParams(n)
	if err := node.Prepare(np); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	ctrd := node.Containerd(np, c.ContainerdBin())
	if err := ensure(ctx, sv, ctrd); err != nil {
		return err
	}
	if err := waitFor(ctx, sv, ctrd.Name, time.Minute, func(ctx context.Context) error {
		return crictl(ctx, c, np.Socket(), "version")
	}); err != nil {
		return err
	}
	kl := node.Kubelet(np)
	if err := ensure(ctx, sv, kl); err != nil {
		return err
	}
	if err := waitFor(ctx, sv, kl.Name, 3*time.Minute, func(ctx context.Context) error { return nodeReady(ctx, cs, n.Name) }); err != nil {
		return err
	}
	p.logf("%s Ready (kubelet :%d, pods %s, cgroup %s)", n.Name, n.KubeletPort, n.Subnet, n.CgroupRoot)
	return nil
}

// crictl runs crictl against a node's containerd.
func crictl(ctx context.Context, c *Config, sock string, args ...string) error {
	ep := "unix://" + sock
	cmd := exec.CommandContext(ctx, c.Deps.Crictl, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("crictl %v: %w: %s", args, err, out)
	}
	return nil
}

func probeNode(ctx context.Context, c *Config) *probe.Report {
	return probe.Run(ctx, probe.Options{
		CRIU: c.Deps.CRIU, Containerd: filepath.Join(c.ContainerdBin(), "containerd"), Runc: c.Runc(),
		Kubelet: filepath.Join(c.KubeBin, "kubelet"), RuncConfig: host.RuncCRIUConf,
	})
}

// buildRuntimeHandler builds ms2m's runtime handler from the source tree
// into the lab's binaries, replacing the one the nodes' containerd runs at
// once (a rename: a create running meanwhile keeps the old one).
func buildRuntimeHandler(ctx context.Context, c *Config, repo string) (string, error) {
	bin := filepath.Join(c.PathDir(), "ms2m-runtime")
	if err := goBuild(ctx, repo, "./cmd/ms2m-runtime", bin+".new"); err != nil {
		return "", err
	}
	return bin, os.Rename(bin+".new", bin)
}

// goBuild builds pkg of the source tree at repo into out.
func goBuild(ctx context.Context, repo, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return nil
}

// kubeScript is the source tree's hack/kube-binaries.sh ("" without one:
// deps.Kube then takes only what is built already).
func kubeScript(repo string) string {
	if repo == "" {
		return ""
	}
	return filepath.Join(repo, "hack", "kube-binaries.sh")
}

// installTools puts kubectl-migrate (and kubectl, where the host has none)
// into the lab's tools directory, which `ms2m lab env` puts first in PATH:
// the README's `kubectl migrate ...` lines work after `make demo`.
func installTools(ctx context.Context, c *Config, repo string, logf func(string, ...any)) error {
	dir := c.ToolsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if repo == "" {
		logf("kubectl-migrate not built (no source tree)")
	} else {
		if err := goBuild(ctx, repo, "./cmd/kubectl-migrate", filepath.Join(dir, "kubectl-migrate")); err != nil {
			return err
		}
	}
	if path, err := exec.LookPath("kubectl"); err == nil {
		logf("kubectl: the host's (%s)", path)
		return nil
	}
	bin, err := deps.Kube(ctx, deps.KubeOptions{Version: c.KubeVersion, Cache: c.Cache, Script: kubeScript(repo), Commands: []string{"kubectl"}, Logf: logf})
	if err != nil {
		return err
	}
	link := filepath.Join(dir, "kubectl")
	_ = os.Remove(link)
	logf("kubectl %s built from the module proxy", c.KubeVersion)
	return os.Symlink(filepath.Join(bin, "kubectl"), link)
}
