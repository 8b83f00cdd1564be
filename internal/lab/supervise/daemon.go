package supervise

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// envDaemon marks a process started as the daemon; its value is the run
// directory. Any binary that links this package can become the daemon, so
// the lab needs no helper binary of its own.
const envDaemon = "MS2M_LAB_SUPERVISOR"

const prSetChildSubreaper = 36

func init() {
	if dir := os.Getenv(envDaemon); dir != "" {
		os.Exit(runDaemon(dir))
	}
}

type daemon struct {
	dir   string
	mu    sync.Mutex
	state State
	stop  chan struct{}
	// shuttingDown: no process is restarted any more.
	shuttingDown bool
}

const (
	restartMin   = time.Second
	restartMax   = 10 * time.Second
	restartReset = 30 * time.Second
)

func runDaemon(dir string) int {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "supervisor: PR_SET_CHILD_SUBREAPER:", e)
		return 1
	}
	d := &daemon{dir: dir, stop: make(chan struct{})}
	d.state.Daemon = os.Getpid()
	d.state.DaemonTicks, _ = StartTicks(os.Getpid())
	// A daemon restarted over a dead one keeps the old records, so that
	// `down` still knows what to stop.
	if old, err := ReadState(dir); err == nil {
		for _, p := range old.Procs {
			if p.Alive() {
				d.state.Procs = append(d.state.Procs, p)
			}
		}
	}
	d.persist()

	sock := SocketPath(dir)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "supervisor:", err)
		return 1
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	chld := make(chan os.Signal, 64)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		for range chld {
			d.reap()
		}
	}()
	srv := &http.Server{Handler: d.routes()}
	go func() { _ = srv.Serve(ln) }()
	select {
	case <-term:
		d.shutdown(10 * time.Second)
	case <-d.stop:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	_ = os.Remove(sock)
	return 0
}

// SocketPath is where the daemon listens.
func SocketPath(dir string) string { return filepath.Join(dir, "supervisor.sock") }

func statePath(dir string) string { return filepath.Join(dir, "procs.json") }

// ReadState reads the records the daemon last persisted; it works when the
// daemon is gone.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(b, &s)
}

func (d *daemon) persist() {
	b, _ := json.MarshalIndent(&d.state, "", "  ")
	tmp := statePath(d.dir) + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		_ = os.Rename(tmp, statePath(d.dir))
	}
}

func (d *daemon) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		d.mu.Lock()
		for _, p := range d.state.Procs {
			if p.PID == pid && !p.Exited {
				p.Exited, p.ExitedAt = true, time.Now()
				if ws.Signaled() {
					p.Signal = ws.Signal().String()
				} else {
					p.ExitCode = ws.ExitStatus()
				}
				d.restartLater(p)
				d.persist()
			}
		}
		d.mu.Unlock()
	}
}

// restartLater schedules p's restart when its spec asks for one and
// nobody asked it to stop. d.mu is held.
func (d *daemon) restartLater(p *Proc) {
	if !p.Restart || p.stopping || d.shuttingDown {
		return
	}
	wait := restartMin
	if p.ExitedAt.Sub(p.Started) < restartReset && p.Backoff > 0 {
		wait = min(2*p.Backoff, restartMax)
	}
	p.Backoff = wait
	time.AfterFunc(wait, func() {
		d.mu.Lock()
		// Started again by hand, stopped, or shut down meanwhile.
		current := d.find(p.Name) == p && !p.stopping && !d.shuttingDown
		d.mu.Unlock()
		if !current {
			return
		}
		if _, err := d.start(p.Spec, p); err != nil {
			fmt.Fprintf(os.Stderr, "supervisor: restarting %s: %v\n", p.Name, err)
		}
	})
}

func (d *daemon) find(name string) *Proc {
	for i := len(d.state.Procs) - 1; i >= 0; i-- {
		if d.state.Procs[i].Name == name {
			return d.state.Procs[i]
		}
	}
	return nil
}

// start starts s; after, when not nil, is the record of the run it restarts.
func (d *daemon) start(s Spec, after *Proc) (*Proc, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if after != nil && d.find(s.Name) != after {
		return nil, fmt.Errorf("%s was started again meanwhile", s.Name)
	}
	if p := d.find(s.Name); p != nil && p.Alive() {
		return nil, fmt.Errorf("%s already runs (pid %d)", s.Name, p.PID)
	}
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	attr := &os.ProcAttr{
		Dir:   s.Dir,
		Env:   s.Env,
		Files: []*os.File{null, logf, logf},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	if attr.Env == nil {
		attr.Env = os.Environ()
	}
	if s.UID != 0 || s.GID != 0 {
		attr.Sys.Credential = &syscall.Credential{Uid: s.UID, Gid: s.GID, NoSetGroups: true}
	}
	proc, err := os.StartProcess(s.Path, append([]string{s.Path}, s.Args...), attr)
	if err != nil {
		return nil, err
	}
	// Reaping happens through wait4(-1): the os.Process handle is not needed.
	pid := proc.Pid
	_ = proc.Release()
	ticks, _ := StartTicks(pid)
	p := &Proc{Spec: s, PID: pid, StartTicks: ticks, Started: time.Now()}
	if after != nil {
		p.Restarts, p.Backoff = after.Restarts+1, after.Backoff
		fmt.Fprintf(os.Stderr, "supervisor: %s ended (%s); restarted as pid %d after %s\n", s.Name, after, pid, after.Backoff)
	}
	d.state.Procs = slices.DeleteFunc(d.state.Procs, func(o *Proc) bool { return o.Name == s.Name })
	d.state.Procs = append(d.state.Procs, p)
	d.persist()
	return p, nil
}

// stopProc sends SIGTERM, then SIGKILL after grace, and waits for the reap.
func (d *daemon) stopProc(name string, grace time.Duration) (*Proc, error) {
	d.mu.Lock()
	p := d.find(name)
	if p == nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("no process %q", name)
	}
	p.stopping = true
	d.mu.Unlock()
	if !killWait(p.PID, p.StartTicks, syscall.SIGTERM, grace) {
		killWait(p.PID, p.StartTicks, syscall.SIGKILL, 5*time.Second)
	}
	// A record inherited from an earlier daemon is not our child: nothing
	// reaps it here, so its end is taken from /proc.
	deadline := time.Now().Add(2 * time.Second)
	for {
		d.reap()
		d.mu.Lock()
		if !p.Exited && (time.Now().After(deadline) || !SameProcess(p.PID, p.StartTicks) && !isChild(p.PID)) {
			p.Exited, p.ExitedAt, p.Signal = true, time.Now(), "unknown"
			d.persist()
		}
		done := p.Exited
		d.mu.Unlock()
		if done {
			return p, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isChild reports whether pid's parent is this process.
func isChild(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f, err := statFields(string(b))
	return err == nil && f[1] == strconv.Itoa(os.Getpid())
}

// shutdown stops every process in reverse start order, then kills whatever
// descends from the daemon still (shims and their containers, daemons'
// helpers such as epmd).
func (d *daemon) shutdown(grace time.Duration) {
	d.mu.Lock()
	d.shuttingDown = true
	procs := slices.Clone(d.state.Procs)
	d.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i].Alive() {
			_, _ = d.stopProc(procs[i].Name, grace)
		}
	}
	d.killDescendants()
}

func (d *daemon) killDescendants() []int {
	var killed []int
	for range 3 {
		pids := Descendants(os.Getpid())
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if t, err := StartTicks(pid); err == nil {
				if killWait(pid, t, syscall.SIGKILL, 2*time.Second) {
					killed = append(killed, pid)
				}
			}
		}
		d.reap()
	}
	d.reap()
	return killed
}
