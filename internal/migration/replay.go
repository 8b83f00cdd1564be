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
	// PrimaryReady and BufferReady are exact ready counts, now.
	PrimaryReady, BufferReady int64
	// Consumers of the primary queue, now.
	Consumers int
	// Prefetch is the source consumer's prefetch as the broker reported
	// it; 0 when unlimited or unknown (a channel-wide prefetch is not
	// reported per consumer).
	Prefetch int64
	// PrefetchAssumed: the broker cannot describe consumers and Prefetch
	// is the operator's assumption, not an observation.
	PrefetchAssumed bool
	// Sampled: the broker's statistics of the primary queue (ready and
	// unacked from one moment) are known, and SampledAfterBind says that
	// moment came after the bind.
	Sampled                      bool
	SampledReady, SampledUnacked int64
	SampledAfterBind             bool
}

// ReplayCovers reports whether every message the source has not applied
// yet is also in the replay queue, so that a checkpoint now loses nothing.
//
// The replay queue holds only what was published after its bind. Messages
// published before it and still waiting in the primary queue (a backlog),
// or delivered to the source and not yet applied (its prefetch), would be
// in neither the checkpoint nor the replay queue. Two observations prove
// that none is left:
//
//   - traffic: the only consumer, with prefetch P, has been handed at
//     least P messages published after the bind (PrimaryReady + P <=
//     BufferReady: both queues get every message published since the bind,
//     and the replay queue is not consumed yet). A consumer that acks in
//     delivery order holds at most P unacked, so everything older is
//     applied. Exact: both counts come straight from the broker.
//   - quiet: the broker's statistics, sampled after the bind, show the
//     primary queue with nothing ready and nothing unacked: at that moment
//     the source had applied everything it was ever given.
//
// Neither holds while the source still works on what it held at the bind
// (the two confirmed losses: a prefetched burst, an idle stream after it).
func ReplayCovers(c ReplayCoverage) (bool, string) {
	if c.Consumers == 0 {
		return false, "waiting for the source to consume the primary queue again (it has no consumer): what was published before the bind must reach it first"
	}
	prefetch := "prefetch " + fmt.Sprint(c.Prefetch) + " as the broker reports it"
	if c.PrefetchAssumed {
		prefetch = fmt.Sprintf("prefetch assumed to be at most %d: the broker does not describe its consumers", c.Prefetch)
	}
	if c.Consumers == 1 && c.Prefetch > 0 && c.PrimaryReady+c.Prefetch <= c.BufferReady {
		return true, fmt.Sprintf("the source was handed at least %d message(s) published after the replay queue was bound (%s; %d ready in the primary queue, %d in the replay queue): it has applied everything older",
			c.BufferReady-c.PrimaryReady, prefetch, c.PrimaryReady, c.BufferReady)
	}
	if c.Sampled && c.SampledAfterBind && c.SampledReady == 0 && c.SampledUnacked == 0 {
		return true, "the broker's statistics, sampled after the replay queue was bound, show the primary queue with nothing ready and nothing unacknowledged: the source had applied everything it was given"
	}
	switch {
	case c.PrimaryReady > c.BufferReady:
		return false, fmt.Sprintf("waiting for the source to work off %d message(s) published before the replay queue was bound", c.PrimaryReady-c.BufferReady)
	case c.Sampled && c.SampledAfterBind:
		return false, fmt.Sprintf("waiting for the source to apply what it holds: the broker's statistics sampled after the bind show %d ready and %d unacknowledged in the primary queue", c.SampledReady, c.SampledUnacked)
	case c.Sampled:
		return false, fmt.Sprintf("waiting for the broker's statistics to be sampled after the bind (the last sample shows %d unacknowledged), or for %d more message(s) to pass", c.SampledUnacked, max(c.PrimaryReady+max(c.Prefetch, 1)-c.BufferReady, 1))
	}
	return false, fmt.Sprintf("waiting for the source to be handed more messages published after the bind than it may hold (%s; %d ready in the primary queue, %d in the replay queue)", prefetch, c.PrimaryReady, c.BufferReady)
}
