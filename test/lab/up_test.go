//go:build lab

package lab_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/lab"
	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// A second `up` on a running lab restarts nothing and leaves it healthy.
func TestUpIsIdempotent(t *testing.T) {
	c := labConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sv := supervise.Open(c.RunDir())
	before, err := sv.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := lab.Default()
	if err != nil {
		t.Fatal(err)
	}
	again.Dir, again.Containerd = c.Dir, c.Containerd
	repo, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := lab.Up(ctx, again, lab.Options{Out: io.Discard, Repo: repo}); err != nil {
		t.Fatal(err)
	}
	t.Logf("second up: %.1fs", time.Since(t0).Seconds())
	after, err := sv.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Daemon != before.Daemon {
		t.Fatalf("supervisor replaced: %d -> %d", before.Daemon, after.Daemon)
	}
	pids := map[string]int{}
	for _, p := range before.Procs {
		pids[p.Name] = p.PID
	}
	for _, p := range after.Procs {
		if pids[p.Name] != p.PID {
			t.Errorf("%s restarted: pid %d -> %d", p.Name, pids[p.Name], p.PID)
		}
	}
	s, err := lab.GetStatus(ctx, c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Healthy {
		t.Fatalf("unhealthy after a second up: %+v", s.Components)
	}
	if s.RSS <= 0 || s.Capabilities == nil {
		t.Fatalf("status without memory or capabilities: rss %d", s.RSS)
	}
}
