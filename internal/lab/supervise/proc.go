// Package supervise runs the lab's long-lived processes under a single
// daemon that is their parent and their child subreaper. On these machines
// PID 1 never reaps, so every process the lab leaves to PID 1 (containerd
// shims, the daemons' own helpers) would stay a zombie; the daemon reaps
// them all, knows every PID it started, and stops them by PID.
package supervise

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec is a process to start.
type Spec struct {
	Name string   `json:"name"`
	Path string   `json:"path"`
	Args []string `json:"args,omitempty"`
	// Env is the whole environment; empty means the daemon's own.
	Env []string `json:"env,omitempty"`
	Dir string   `json:"dir,omitempty"`
	// Log receives stdout and stderr (appended).
	Log string `json:"log"`
	// UID/GID other than 0 drop root, e.g. for RabbitMQ.
	UID uint32 `json:"uid,omitempty"`
	GID uint32 `json:"gid,omitempty"`
	// Restart starts the process again when it ends without being asked
	// to (killed, crashed), as a node's init system restarts its kubelet
	// and container runtime: after a second, doubling up to restartMax
	// while it keeps dying within restartReset of its start.
	Restart bool `json:"restart,omitempty"`
}

// Proc is a started process as the daemon saw it.
type Proc struct {
	Spec
	PID int `json:"pid"`
	// StartTicks is the start time from /proc/PID/stat: a PID alone may be
	// reused by an unrelated process after the lab's one died.
	StartTicks uint64    `json:"startTicks"`
	Started    time.Time `json:"started"`
	Exited     bool      `json:"exited,omitempty"`
	ExitCode   int       `json:"exitCode,omitempty"`
	Signal     string    `json:"signal,omitempty"`
	ExitedAt   time.Time `json:"exitedAt,omitzero"`
	// Restarts counts the times the daemon started it again after it
	// ended on its own; Backoff is the wait before the last of them.
	Restarts int           `json:"restarts,omitempty"`
	Backoff  time.Duration `json:"backoff,omitempty"`
	// stopping: asked to stop, so its end is not restarted.
	stopping bool
}

// State is what the daemon reports and persists.
type State struct {
	Daemon      int     `json:"daemonPID"`
	DaemonTicks uint64  `json:"daemonStartTicks"`
	Procs       []*Proc `json:"procs"`
}

// Alive reports whether the process still runs (and is the one started).
func (p *Proc) Alive() bool { return !p.Exited && SameProcess(p.PID, p.StartTicks) }

func (p *Proc) String() string {
	switch {
	case !p.Exited:
		return fmt.Sprintf("%s pid %d", p.Name, p.PID)
	case p.Signal != "":
		return fmt.Sprintf("%s pid %d killed by %s", p.Name, p.PID, p.Signal)
	default:
		return fmt.Sprintf("%s pid %d exited %d", p.Name, p.PID, p.ExitCode)
	}
}

// StartTicks reads field 22 of /proc/PID/stat.
func StartTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	f, err := statFields(string(b))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// statFields splits /proc/PID/stat after the command name, which may itself
// hold spaces and parentheses: fields[0] is the state (field 3).
func statFields(s string) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, errors.New("short stat")
	}
	return f, nil
}

// SameProcess reports whether pid runs and is not a zombie and started at
// ticks.
func SameProcess(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f, err := statFields(string(b))
	if err != nil || f[0] == "Z" || f[0] == "X" {
		return false
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && t == ticks
}

// Descendants lists every live descendant of pid, children before their
// own children.
func Descendants(pid int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f, err := statFields(string(b))
		if err != nil || f[0] == "Z" {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		kids[pp] = append(kids[pp], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, k := range kids[p] {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// killWait sends sig to pid and waits up to d for it to be gone.
func killWait(pid int, ticks uint64, sig syscall.Signal, d time.Duration) bool {
	if !SameProcess(pid, ticks) {
		return true
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !SameProcess(pid, ticks) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !SameProcess(pid, ticks)
}

// RSS returns a process's resident set size in bytes (VmRSS).
func RSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}
