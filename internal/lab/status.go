package lab

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ms2m/ms2m/internal/lab/controlplane"
	"github.com/ms2m/ms2m/internal/lab/probe"
	"github.com/ms2m/ms2m/internal/lab/rabbitmq"
	"github.com/ms2m/ms2m/internal/lab/registry"
	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// Component is one part of the lab as `status` sees it.
type Component struct {
	Name    string `json:"name"`
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running"`
	// RSS is the process's resident memory, in bytes.
	RSS     int64  `json:"rss,omitempty"`
	Healthy bool   `json:"healthy"`
	Detail  string `json:"detail,omitempty"`
}

// Status is the lab's health and capability report.
type Status struct {
	Dir     string `json:"dir"`
	Healthy bool   `json:"healthy"`
	// RSS is the resident memory of everything the lab runs: the
	// supervisor and all its descendants (daemons, shims, pods).
	RSS          int64         `json:"rss"`
	Components   []Component   `json:"components"`
	Capabilities *probe.Report `json:"capabilities,omitempty"`
	Env          []string      `json:"env,omitempty"`
	Config       *Config       `json:"-"`
}

// GetStatus checks every process and endpoint of the lab.
func GetStatus(ctx context.Context, dir string) (*Status, error) {
	c, err := Load(dir)
	if err != nil {
		return nil, err
	}
	s := &Status{Dir: dir, Healthy: true, Config: c, Env: c.Env()}
	s.Capabilities, _ = probe.Read(c.CapabilitiesFile())
	sv := supervise.Open(c.RunDir())
	st, err := sv.State(ctx)
	if err != nil {
		s.Healthy = false
		s.Components = append(s.Components, Component{Name: "supervisor", Detail: "not answering: " + err.Error()})
		return s, nil
	}
	s.Components = append(s.Components, Component{Name: "supervisor", PID: st.Daemon, Running: true, Healthy: true, RSS: supervise.RSS(st.Daemon)})
	s.RSS = supervise.RSS(st.Daemon)
	for _, pid := range supervise.Descendants(st.Daemon) {
		s.RSS += supervise.RSS(pid)
	}
	procs := map[string]*supervise.Proc{}
	for _, p := range st.Procs {
		procs[p.Name] = p
	}
	hc, _ := controlplane.HTTPClient(c.PKIDir())
	cs, _ := c.Clientset()
	check := func(name string, health func(context.Context) error) {
		comp := Component{Name: name}
		p := procs[name]
		switch {
		case p == nil:
			comp.Detail = "not started"
		case !p.Alive():
			comp.PID, comp.Detail = p.PID, p.String()
		default:
			comp.PID, comp.Running, comp.RSS = p.PID, true, supervise.RSS(p.PID)
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := health(hctx)
			cancel()
			comp.Healthy = err == nil
			if err != nil {
				comp.Detail = err.Error()
			}
		}
		if p != nil && p.Restarts > 0 {
			comp.Detail = strings.TrimPrefix(fmt.Sprintf("%s; restarted %d time(s) by the supervisor", comp.Detail, p.Restarts), "; ")
		}
		if !comp.Healthy {
			s.Healthy = false
		}
		s.Components = append(s.Components, comp)
	}
	check("etcd", func(ctx context.Context) error {
		return controlplane.Probe(ctx, controlplane.InsecureHTTP, fmt.Sprintf("http://127.0.0.1:%d/health", c.Ports.Etcd))
	})
	check("kube-apiserver", func(ctx context.Context) error { return controlplane.Probe(ctx, hc, c.APIServerURL()+"/readyz") })
	check("kube-controller-manager", func(ctx context.Context) error {
		return controlplane.Probe(ctx, controlplane.InsecureHTTP, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.Ports.ControllerMg))
	})
	check("kube-scheduler", func(ctx context.Context) error {
		return controlplane.Probe(ctx, controlplane.InsecureHTTP, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.Ports.Scheduler))
	})
	check("registry", func(ctx context.Context) error { return registry.Healthy(ctx, c.Registry()) })
	check("rabbitmq", func(ctx context.Context) error { return rabbitmq.Healthy(ctx, c.RabbitMQ()) })
	for _, n := range c.Nodes {
		np := c.NodeParams(n)
		check("containerd-"+n.Name, func(ctx context.Context) error { return crictl(ctx, c, np.Socket(), "version") })
		check("kubelet-"+n.Name, func(ctx context.Context) error {
			if err := controlplane.Probe(ctx, controlplane.InsecureHTTP, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.HealthzPort)); err != nil {
				return err
			}
			if cs == nil {
				return fmt.Errorf("no API client")
			}
			return nodeReady(ctx, cs, n.Name)
		})
	}
	return s, nil
}

// Print writes the status for people.
func (s *Status) Print(w io.Writer) {
	word := map[bool]string{true: "healthy", false: "UNHEALTHY"}
	fmt.Fprintf(w, "lab %s: %s, %d MiB resident in all\n", s.Dir, word[s.Healthy], s.RSS>>20)
	for _, c := range s.Components {
		state := "down"
		switch {
		case c.Healthy:
			state = "ok"
		case c.Running:
			state = "running, unhealthy"
		}
		pid := ""
		if c.PID != 0 {
			pid = fmt.Sprintf("pid %d", c.PID)
		}
		rss := ""
		if c.RSS > 0 {
			rss = fmt.Sprintf("%d MiB", c.RSS>>20)
		}
		fmt.Fprintf(w, "  %-24s %-10s %-8s %-18s %s\n", c.Name, pid, rss, state, c.Detail)
	}
	if s.Capabilities != nil {
		r := s.Capabilities
		fmt.Fprintf(w, "capabilities (probed %s; kernel %s, cgroups %s, criu %s, containerd %s, runc %s, kubelet %s):\n",
			r.ProbedAt.Format(time.RFC3339), r.Host.Kernel, r.Host.CgroupMode, r.CRIU.Version, r.Runtime.Containerd, r.Runtime.Runc, r.Runtime.Kubelet)
		for _, l := range r.Summary() {
			fmt.Fprintf(w, "  %s\n", l)
		}
		if s.Config != nil {
			fmt.Fprintf(w, "  report: %s\n", s.Config.CapabilitiesFile())
		}
	}
}
