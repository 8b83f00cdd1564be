// Package probe measures what checkpoint/restore can do on a node: the
// kernel's features as CRIU sees them, the runtime's versions, and from
// them which migration techniques are possible. The controller and the node
// agents read the report to choose a technique and to say why another one
// was not used.
package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Technique says whether one memory-transfer technique can run, and why not.
type Technique struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason"`
}

// Report is the capability report.
type Report struct {
	ProbedAt time.Time `json:"probedAt"`
	Host     Host      `json:"host"`
	CRIU     CRIU      `json:"criu"`
	Runtime  Runtime   `json:"runtime"`
	// Techniques: "stopAndCopy" (kubelet checkpoint API), "postCopy"
	// (CRIU lazy pages over userfaultfd), "preCopy" (iterative pre-dumps
	// with soft-dirty tracking), "tcpClose" (restoring pods that held TCP
	// connections on another node).
	Techniques map[string]Technique `json:"techniques"`
}

// Host facts that decide what CRIU may do.
type Host struct {
	Kernel string `json:"kernel"`
	// CgroupMode is v1, hybrid (v1 controllers + cgroup2 at unified) or v2.
	CgroupMode string `json:"cgroupMode"`
	// PipeMaxSize must reach 4 MiB for lazy pages when the process lacks
	// CAP_SYS_RESOURCE.
	PipeMaxSize    int  `json:"pipeMaxSize"`
	CapSysResource bool `json:"capSysResource"`
}

// CRIU as found on the node.
type CRIU struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	// Check is `criu check`: the basic dump/restore requirements.
	Check       bool            `json:"check"`
	CheckOutput string          `json:"checkOutput,omitempty"`
	Features    map[string]bool `json:"features"`
	// RuncConfig is the options runc makes CRIU read (/etc/criu/runc.conf).
	RuncConfig []string `json:"runcConfig"`
}

// Runtime versions.
type Runtime struct {
	Containerd string `json:"containerd,omitempty"`
	Runc       string `json:"runc,omitempty"`
	Kubelet    string `json:"kubelet,omitempty"`
	Crictl     string `json:"crictl,omitempty"`
}

// Features probed with `criu check --feature`.
var Features = []string{
	"mem_dirty_track", "uffd", "uffd-noncoop", "network_lock_nftables",
	"tcp_half_closed", "timens", "pidfd_store", "clone3_set_tid", "external_net_ns",
	"cgroupns", "userns", "can_map_vdso", "get_rseq_conf", "memfd_hugetlb", "sk_unix_file",
}

// Options says where the node's binaries are.
type Options struct {
	CRIU, Containerd, Runc, Kubelet, Crictl string
	RuncConfig                              string // /etc/criu/runc.conf
}

// Run probes the node.
func Run(ctx context.Context, o Options) *Report {
	r := &Report{ProbedAt: time.Now().UTC(), Techniques: map[string]Technique{}}
	r.Host = probeHost()
	r.CRIU.Path = o.CRIU
	r.CRIU.Features = map[string]bool{}
	if out, err := run(ctx, o.CRIU, "--version"); err == nil {
		r.CRIU.Version = first(regexp.MustCompile(`Version: (\S+)`), out)
	}
	out, err := run(ctx, o.CRIU, "check")
	r.CRIU.Check = err == nil
	r.CRIU.CheckOutput = strings.TrimSpace(out)
	for _, f := range Features {
		out, err := run(ctx, o.CRIU, "check", "--feature", f)
		// A feature this CRIU does not know is not reported at all.
		if !strings.Contains(out, "Unknown feature") {
			r.CRIU.Features[f] = err == nil
		}
	}
	if b, err := os.ReadFile(o.RuncConfig); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				r.CRIU.RuncConfig = append(r.CRIU.RuncConfig, l)
			}
		}
	}
	ver := func(bin, re string, args ...string) string {
		if bin == "" {
			return ""
		}
		out, _ := run(ctx, bin, args...)
		return first(regexp.MustCompile(re), out)
	}
	r.Runtime = Runtime{
		Containerd: ver(o.Containerd, `containerd\S* \S+ v?(\d[^\s+]*)`, "--version"),
		Runc:       ver(o.Runc, `runc version (\d[^\s+]*)`, "--version"),
		Kubelet:    ver(o.Kubelet, `Kubernetes (v\S+)`, "--version"),
		Crictl:     ver(o.Crictl, `crictl version (v?\S+)`, "--version"),
	}
	r.Techniques = Decide(r)
	return r
}

// Decide derives the techniques from the facts; it is pure so it can be
// tested against reports of other machines.
func Decide(r *Report) map[string]Technique {
	t := map[string]Technique{}
	f := r.CRIU.Features
	switch {
	case r.CRIU.Version == "":
		t["stopAndCopy"] = Technique{false, "criu not found or not runnable"}
	case !r.CRIU.Check:
		t["stopAndCopy"] = Technique{false, "criu check fails: " + lastLine(r.CRIU.CheckOutput)}
	default:
		t["stopAndCopy"] = Technique{true, "criu check passes"}
	}
	switch {
	case !t["stopAndCopy"].Available:
		t["postCopy"] = Technique{false, "no working criu"}
	case !f["uffd"] || !f["uffd-noncoop"]:
		t["postCopy"] = Technique{false, "kernel lacks userfaultfd (uffd / uffd-noncoop)"}
	case !r.Host.CapSysResource && r.Host.PipeMaxSize < 4<<20:
		t["postCopy"] = Technique{false, fmt.Sprintf("no CAP_SYS_RESOURCE and fs.pipe-max-size=%d < 4194304: lazy pages cannot size their pipes", r.Host.PipeMaxSize)}
	default:
		t["postCopy"] = Technique{true, "userfaultfd available (uffd, uffd-noncoop); lazy pages restore into a fresh PID namespace"}
	}
	switch {
	case !t["stopAndCopy"].Available:
		t["preCopy"] = Technique{false, "no working criu"}
	case !f["mem_dirty_track"]:
		t["preCopy"] = Technique{false, "kernel does not track dirty memory (soft-dirty, CONFIG_MEM_SOFT_DIRTY): criu pre-dump and --track-mem are refused; use stop-and-copy or post-copy"}
	default:
		t["preCopy"] = Technique{true, "soft-dirty tracking available: iterative pre-dumps possible"}
	}
	has := func(opt string) bool {
		for _, o := range r.CRIU.RuncConfig {
			if o == opt {
				return true
			}
		}
		return false
	}
	switch {
	case !t["stopAndCopy"].Available:
		t["tcpClose"] = Technique{false, "no working criu"}
	case !has("tcp-close"):
		t["tcpClose"] = Technique{false, "runc's CRIU config lacks tcp-close: pods with live TCP connections fail to checkpoint through the kubelet"}
	default:
		t["tcpClose"] = Technique{true, "runc's CRIU config has tcp-close: live connections are closed on restore and clients reconnect"}
	}
	return t
}

func probeHost() Host {
	h := Host{CgroupMode: "v1"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		h.CgroupMode = "v2"
	} else if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
		h.CgroupMode = "hybrid"
	}
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		h.PipeMaxSize, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	h.CapSysResource = hasCap(24)
	return h
}

// hasCap reads the effective capability set of this process.
func hasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}

func run(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

func first(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); len(m) > 1 {
		return m[1]
	}
	return ""
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// Write stores the report as JSON.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Read loads a report.
func Read(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	return &r, json.Unmarshal(b, &r)
}

// Summary is one line per technique, for people.
func (r *Report) Summary() []string {
	var out []string
	for _, k := range []string{"stopAndCopy", "postCopy", "preCopy", "tcpClose"} {
		t, ok := r.Techniques[k]
		if !ok {
			continue
		}
		mark := "no "
		if t.Available {
			mark = "yes"
		}
		out = append(out, fmt.Sprintf("%-12s %s  %s", k, mark, t.Reason))
	}
	return out
}
