package bench

import (
	"context"
	"sync"
	"time"
)

// Meter follows the ms2m processes through one run: CPU time sampled
// every Every, so that it can be cut to the migration's own window (the
// run also spends time setting up and letting the consumer catch up), and
// the peak RSS over the whole run.
type Meter struct {
	ProcRoot string
	// CgroupRoots maps each lab node's cgroup root to the node.
	CgroupRoots map[string]string
	Every       time.Duration
}

// Sample is the CPU seconds per role at one moment.
type Sample struct {
	At  time.Time
	CPU map[string]float64
}

// Usage is what a Meter measured.
type Usage struct {
	Samples []Sample
	// PeakRSS per role, in bytes; PeakReset false means the kernel would
	// not reset the peak, which then covers the process's whole life.
	PeakRSS   map[string]int64
	PeakReset bool
	// Roles found; Lost those whose process changed during the run (their
	// numbers are left out).
	Roles, Lost []string
}

// Start finds the processes and samples them until the returned stop is
// called.
func (m Meter) Start(ctx context.Context) (stop func() Usage, err error) {
	procs, err := FindProcs(m.ProcRoot, m.CgroupRoots)
	if err != nil {
		return nil, err
	}
	u := Usage{PeakRSS: map[string]int64{}, PeakReset: true}
	for _, p := range procs {
		if resetPeak(m.ProcRoot, p.PID) != nil {
			u.PeakReset = false
		}
		u.Roles = append(u.Roles, p.Role)
	}
	var mu sync.Mutex
	take := func() {
		s := Sample{At: time.Now(), CPU: map[string]float64{}}
		for _, p := range procs {
			if cpu, start, err := readStat(m.ProcRoot, p.PID); err == nil && start == p.start {
				s.CPU[p.Role] += cpu
			}
		}
		mu.Lock()
		u.Samples = append(u.Samples, s)
		mu.Unlock()
	}
	take()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(m.Every)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				take()
			}
		}
	}()
	return func() Usage {
		cancel()
		<-done
		take()
		lost := map[string]bool{}
		for _, p := range procs {
			if !p.alive(m.ProcRoot) {
				lost[p.Role] = true
				continue
			}
			if rss, err := peakRSS(m.ProcRoot, p.PID); err == nil && rss > u.PeakRSS[p.Role] {
				u.PeakRSS[p.Role] = rss
			}
		}
		for r := range lost {
			u.Lost = append(u.Lost, r)
			delete(u.PeakRSS, r)
			for _, s := range u.Samples {
				delete(s.CPU, r)
			}
		}
		return u
	}, nil
}

// CPUBetween is a role's CPU seconds from the last sample at or before
// from to the first at or after to: the window is covered whole, at the
// cost of up to one sampling interval at each end.
func CPUBetween(samples []Sample, role string, from, to time.Time) (float64, bool) {
	if len(samples) == 0 || to.Before(from) {
		return 0, false
	}
	first, last := 0, len(samples)-1
	for i, s := range samples {
		if !s.At.After(from) {
			first = i
		}
	}
	for i := len(samples) - 1; i >= 0; i-- {
		if !samples[i].At.Before(to) {
			last = i
		}
	}
	a, ok1 := samples[first].CPU[role]
	b, ok2 := samples[last].CPU[role]
	if !ok1 || !ok2 || last < first {
		return 0, false
	}
	return b - a, true
}
