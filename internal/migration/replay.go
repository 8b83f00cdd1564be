package migration

import (
	"fmt"
	"time"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// ReplayState is what the controller observes during Replaying.
type ReplayState struct {
	Mode    v1alpha1.ReplayMode
	Cutoff  time.Duration
	Started time.Time
	// Remaining is what the replay queue still holds (ready + unacked).
	Remaining int64
	// CaughtUpBelow: the target counts as caught up once Remaining is at or
	// below it (a live producer keeps a few messages in flight).
	CaughtUpBelow int64
}

// ReplayDecision says whether to cut over now and why.
type ReplayDecision struct {
	CutOver bool
	// CaughtUp is true when the target has caught up (not just timed out).
	CaughtUp bool
	Reason   string
	// Recheck is when to look again if not cutting over.
	Recheck time.Duration
}

// DecideReplay applies the replay mode. Both modes cut over as soon as the
// target has caught up. Cutoff also cuts over when the cutoff elapses: the
// remaining backlog is then drained by the target after the source stops,
// so the bound costs processing gap, never messages. Drain waits for the
// catch-up however long it takes (the phase timeout still applies).
func DecideReplay(s ReplayState, now time.Time) ReplayDecision {
	if s.Remaining <= s.CaughtUpBelow {
		return ReplayDecision{CutOver: true, CaughtUp: true,
			Reason: fmt.Sprintf("target caught up: %d message(s) left in the replay queue", s.Remaining)}
	}
	elapsed := now.Sub(s.Started)
	if s.Mode == v1alpha1.ReplayCutoff && elapsed >= s.Cutoff {
		return ReplayDecision{CutOver: true,
			Reason: fmt.Sprintf("replay cutoff of %s reached with %d message(s) still buffered; the target drains them after the source stops", s.Cutoff, s.Remaining)}
	}
	recheck := 250 * time.Millisecond
	if s.Mode == v1alpha1.ReplayCutoff {
		if left := s.Cutoff - elapsed; left < recheck {
			recheck = left
		}
	}
	return ReplayDecision{Recheck: recheck,
		Reason: fmt.Sprintf("replaying: %d message(s) left", s.Remaining)}
}
