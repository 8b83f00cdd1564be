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

// ReplayCoverage is what the controller sees of the two queues between
// binding the replay queue and checkpointing.
type ReplayCoverage struct {
	// PrimaryReady and BufferReady are exact ready counts.
	PrimaryReady, BufferReady int64
	// InFlight bounds how many messages the source holds delivered but not
	// yet applied (its prefetch); 0 when unknown.
	InFlight int64
	// SinceBind is how long ago the replay queue was bound.
	SinceBind time.Duration
}

// Settle is how long an idle stream waits after the bind before the
// checkpoint, for the source to apply what it held.
const Settle = time.Second

// ReplayCovers reports whether every message the source has not applied
// yet is also in the replay queue, so that a checkpoint now loses nothing.
//
// The replay queue holds only what was published after its bind. Messages
// published before it and still waiting in the primary queue (a backlog)
// or held unapplied by the source (its prefetch) would be in neither the
// checkpoint nor the replay queue. Both queues get every message published
// since the bind and the source consumes in order, so once the primary
// queue holds fewer ready messages than the replay queue by at least the
// source's prefetch, the source has been handed, and has applied, every
// message that predates the bind.
func ReplayCovers(c ReplayCoverage) (bool, string) {
	inFlight := max(c.InFlight, 1)
	if c.PrimaryReady+inFlight <= c.BufferReady {
		return true, fmt.Sprintf("the source has applied everything published before the replay queue was bound (%d ready in the primary queue, %d in the replay queue, prefetch %d)", c.PrimaryReady, c.BufferReady, inFlight)
	}
	if c.PrimaryReady == 0 && c.BufferReady == 0 && c.SinceBind >= Settle {
		return true, "no message published since the replay queue was bound and none waiting: the source is idle"
	}
	if c.PrimaryReady > c.BufferReady {
		return false, fmt.Sprintf("waiting for the source to work off %d message(s) published before the replay queue was bound", c.PrimaryReady-c.BufferReady)
	}
	return false, fmt.Sprintf("waiting for the source to apply the up to %d message(s) it holds from before the replay queue was bound", inFlight)
}
