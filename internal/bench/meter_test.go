package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestCPUBetweenCoversTheWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	samples := []Sample{
		{At: at(0), CPU: map[string]float64{"manager": 1.0}},
		{At: at(100), CPU: map[string]float64{"manager": 1.5}},
		{At: at(200), CPU: map[string]float64{"manager": 2.5}},
		{At: at(300), CPU: map[string]float64{"manager": 2.6}},
	}
	for _, tc := range []struct {
		from, to int
		want     float64
		ok       bool
	}{
		{100, 200, 1.0, true}, // on samples
		{150, 250, 1.1, true}, // between samples: widened to 100..300
		{-50, 400, 1.6, true}, // beyond the samples: what there is
		{200, 100, 0, false},
	} {
		got, ok := CPUBetween(samples, "manager", at(tc.from), at(tc.to))
		if ok != tc.ok || (ok && fmt.Sprintf("%.3f", got) != fmt.Sprintf("%.3f", tc.want)) {
			t.Errorf("CPUBetween(%d..%d ms) = %v, %v; want %v, %v", tc.from, tc.to, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := CPUBetween(samples, "agent@node-a", at(0), at(300)); ok {
		t.Error("CPU for a role never sampled")
	}
}

// fakeProc writes a /proc entry for pid.
func fakeProc(t *testing.T, root string, pid int, argv0, cgroup string, utime, stime, start int) {
	t.Helper()
	d := filepath.Join(root, fmt.Sprint(pid))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	// the command name holds a space and a parenthesis, as names may
	stat := fmt.Sprintf("%d (my (proc) x) S 1 1 1 0 -1 4194560 100 0 0 0 %d %d 0 0 20 0 8 0 %d 1000 10 0\n", pid, utime, stime, start)
	files := map[string]string{
		"cmdline":    argv0 + "\x00--flag\x00",
		"cgroup":     cgroup,
		"stat":       stat,
		"status":     "Name:\tx\nVmPeak:\t 9000 kB\nVmHWM:\t   4096 kB\nVmRSS:\t 2048 kB\n",
		"clear_refs": "",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindProcsAndMeter(t *testing.T) {
	root := t.TempDir()
	roots := map[string]string{"/ms2m-node-a": "node-a", "/ms2m-node-b": "node-b"}
	fakeProc(t, root, 10, "/usr/local/bin/manager", "0::/ms2m-node-b/kubepods/pod1/c1\n", 150, 50, 777)
	fakeProc(t, root, 11, "/usr/local/bin/agent", "4:memory:/ms2m-node-a/kubepods/pod2/c2\n0::/ms2m-node-a/kubepods/pod2/c2\n", 10, 10, 778)
	fakeProc(t, root, 12, "/usr/local/bin/agent", "0::/ms2m-node-b/kubepods/pod3/c3\n", 0, 0, 779)
	// not ours: the same binary outside the lab, a lookalike path, a node
	// whose root merely shares a prefix
	fakeProc(t, root, 13, "/usr/local/bin/agent", "0::/system.slice/agent.service\n", 0, 0, 780)
	fakeProc(t, root, 14, "/opt/usr/local/bin/manager", "0::/ms2m-node-a/x\n", 0, 0, 781)
	fakeProc(t, root, 15, "/usr/local/bin/manager", "0::/ms2m-node-a2/x\n", 0, 0, 782)
	procs, err := FindProcs(root, roots)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range procs {
		got = append(got, fmt.Sprintf("%d=%s", p.PID, p.Role))
	}
	slices.Sort(got)
	if want := []string{"10=manager", "11=agent@node-a", "12=agent@node-b"}; !slices.Equal(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}

	stop, err := Meter{ProcRoot: root, CgroupRoots: roots, Every: time.Millisecond}.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"10", "11", "12"} {
		if b, _ := os.ReadFile(filepath.Join(root, f, "clear_refs")); string(b) != "5" {
			t.Fatalf("peak of pid %s not reset: clear_refs %q", f, b)
		}
	}
	fakeProc(t, root, 10, "/usr/local/bin/manager", "0::/ms2m-node-b/kubepods/pod1/c1\n", 250, 75, 777)
	fakeProc(t, root, 11, "/usr/local/bin/agent", "0::/ms2m-node-a/kubepods/pod2/c2\n", 10, 10, 999) // restarted: a new process
	time.Sleep(20 * time.Millisecond)
	u := stop()
	last := u.Samples[len(u.Samples)-1]
	if cpu := last.CPU["manager"] - u.Samples[0].CPU["manager"]; fmt.Sprintf("%.2f", cpu) != "1.25" {
		t.Errorf("manager CPU %v s, want 1.25 s ((100+25) ticks at 100 Hz)", cpu)
	}
	if !slices.Equal(u.Lost, []string{"agent@node-a"}) {
		t.Errorf("lost %v: the restarted agent must be left out", u.Lost)
	}
	if _, ok := last.CPU["agent@node-a"]; ok {
		t.Error("the restarted agent's CPU was kept")
	}
	if u.PeakRSS["manager"] != 4096<<10 || !u.PeakReset {
		t.Errorf("peak RSS %v (reset %v)", u.PeakRSS, u.PeakReset)
	}
}
