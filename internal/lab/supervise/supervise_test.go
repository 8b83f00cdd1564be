package supervise

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestDaemonStartsStopsAndReapsOrphans(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	c, err := Ensure(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	daemon, daemonTicks := st.Daemon, st.DaemonTicks
	t.Cleanup(func() { _, _ = KillRecorded(dir) })

	log := filepath.Join(dir, "x.log")
	sleeper, err := c.Start(ctx, Spec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"300"}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, Spec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"1"}, Log: log}); err == nil {
		t.Fatal("a second process of the same name was started")
	}
	// The shell exits at once and leaves its sleep to the daemon.
	forker, err := c.Start(ctx, Spec{Name: "forker", Path: "/bin/sh", Args: []string{"-c", "sleep 300 & echo $! > " + filepath.Join(dir, "orphan") + "; exit 3"}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		s, _ := c.State(ctx)
		for _, p := range s.Procs {
			if p.Name == "forker" && p.Exited {
				return p.ExitCode == 3
			}
		}
		return false
	})
	if !SameProcess(sleeper.PID, sleeper.StartTicks) {
		t.Fatal("sleeper does not run")
	}
	orphan := readPID(t, filepath.Join(dir, "orphan"))
	if got := Descendants(daemon); !contains(got, orphan) || !contains(got, sleeper.PID) {
		t.Fatalf("descendants of the daemon %v lack sleeper %d or orphan %d", got, sleeper.PID, orphan)
	}
	p, err := c.Stop(ctx, "sleeper", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Exited || p.Signal != "terminated" {
		t.Fatalf("sleeper after stop: %+v", p)
	}
	if zombie(sleeper.PID) || zombie(forker.PID) {
		t.Fatal("a stopped process was left a zombie")
	}
	if err := c.Shutdown(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !SameProcess(daemon, daemonTicks) })
	if _, err := os.Stat("/proc/" + itoa(orphan)); err == nil && !zombie(orphan) {
		t.Fatalf("orphan %d survived the shutdown", orphan)
	}
}

func TestKillRecordedStopsWhatADeadDaemonLeft(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	c, err := Ensure(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Start(ctx, Spec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"300"}, Log: filepath.Join(dir, "x.log")})
	if err != nil {
		t.Fatal(err)
	}
	killed, err := KillRecorded(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(killed) < 2 {
		t.Fatalf("killed %v, want the sleeper and the daemon", killed)
	}
	if SameProcess(p.PID, p.StartTicks) {
		t.Fatal("sleeper still runs")
	}
	if c.Ping(ctx) == nil {
		t.Fatal("daemon still answers")
	}
}

func TestKilledProcessIsRestartedUntilStopped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	c, err := Ensure(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = KillRecorded(dir) })
	log := filepath.Join(dir, "x.log")
	first, err := c.Start(ctx, Spec{Name: "kubelet", Path: "/bin/sleep", Args: []string{"300"}, Log: log, Restart: true})
	if err != nil {
		t.Fatal(err)
	}
	once, err := c.Start(ctx, Spec{Name: "once", Path: "/bin/sleep", Args: []string{"300"}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Proc{first, once} {
		if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	proc := func(name string) *Proc {
		s, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range s.Procs {
			if p.Name == name {
				return p
			}
		}
		t.Fatalf("no record of %s", name)
		return nil
	}
	waitFor(t, func() bool { p := proc("kubelet"); return p.PID != first.PID && p.Alive() })
	if p := proc("kubelet"); p.Restarts != 1 || p.Backoff != restartMin {
		t.Fatalf("restarted kubelet: %d restart(s) after %s, want 1 after %s", p.Restarts, p.Backoff, restartMin)
	}
	// Dying again at once doubles the wait.
	second := proc("kubelet")
	if err := syscall.Kill(second.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { p := proc("kubelet"); return p.PID != second.PID && p.Alive() })
	if p := proc("kubelet"); p.Restarts != 2 || p.Backoff != 2*restartMin {
		t.Fatalf("kubelet killed twice: %d restart(s) after %s, want 2 after %s", p.Restarts, p.Backoff, 2*restartMin)
	}
	if _, err := c.Stop(ctx, "kubelet", time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * restartMin)
	if p := proc("kubelet"); p.Alive() || p.Restarts != 2 {
		t.Fatalf("a stopped process was restarted: %+v", p)
	}
	if p := proc("once"); p.Alive() || p.Signal != "killed" {
		t.Fatalf("a process without Restart after SIGKILL: %+v", p)
	}
}
