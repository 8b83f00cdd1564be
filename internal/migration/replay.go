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
	// Overdue: the replay has outlived its timeout past the point of no
	// return (a Sequential source is gone), where failing cannot bring
	// the source back: cut over, whatever the mode.
	Overdue bool
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
	if s.Overdue {
		return ReplayDecision{CutOver: true,
			Reason: fmt.Sprintf("replay timeout passed with %d message(s) still buffered and the source gone: cutting over; the target drains them after the switch", s.Remaining)}
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
	// PrimaryReady and BufferReady are exact ready counts, now (the
	// buffer's read first).
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
	// Fences were put into the primary queue alone after the bind.
	Fences int64
}

// ReplayCovers reports whether every message the source has not applied
// yet is also in the replay queue, so that a checkpoint now loses nothing.
//
// The replay queue holds only what was published after its bind. Messages
// published before it and still waiting in the primary queue (a backlog),
// or delivered to the source and not yet applied (its prefetch), would be
// in neither the checkpoint nor the replay queue. Only exact counts prove
// that none is left (the broker's statistics of unacknowledged messages
// lag by seconds, sometimes far longer, and would prove a busy source
// idle):
//
// Since the bind, BufferReady + Fences messages joined the primary queue
// behind everything that was in it; PrimaryReady of all of them are still
// waiting. So at least BufferReady + Fences - PrimaryReady messages from
// after the bind have been handed to the source, and the queue hands them
// out in order, so it has been handed everything from before the bind. If
// it is the only consumer and it has been handed at least its prefetch P
// of them, and it acks in order (one at a time, as the SDK and most
// consumers do), it holds at most those P unacked: everything older is
// applied.
//
// A stream with little traffic proves this slowly; fences (which a
// consumer with the ms2m SDK acks unapplied) prove it at once.
func ReplayCovers(c ReplayCoverage) (bool, string) {
	if c.Consumers == 0 {
		return false, "waiting for the source to consume the primary queue again (it has no consumer): what was published before the bind must reach it first"
	}
	if c.Consumers > 1 {
		return false, fmt.Sprintf("the primary queue has %d consumers: the source's share of what it was handed cannot be told; waiting for the others to leave", c.Consumers)
	}
	if c.Prefetch <= 0 {
		return false, "the source's consumer has no prefetch limit (or a channel-wide one the broker does not report per consumer), so what it holds unapplied has no bound: set a prefetch (basic.qos) on the workload's consumer"
	}
	prefetch := fmt.Sprintf("prefetch %d as the broker reports it", c.Prefetch)
	if c.PrefetchAssumed {
		prefetch = fmt.Sprintf("prefetch assumed to be at most %d: the broker does not describe its consumers", c.Prefetch)
	}
	handed := c.BufferReady + c.Fences - c.PrimaryReady
	if handed >= c.Prefetch {
		return true, fmt.Sprintf("the source was handed at least %d message(s) that joined its queue after the replay queue was bound (%s; %d ready in the primary queue, %d in the replay queue, %d fence(s)): it has applied everything older",
			handed, prefetch, c.PrimaryReady, c.BufferReady, c.Fences)
	}
	if c.PrimaryReady > c.BufferReady+c.Fences {
		return false, fmt.Sprintf("waiting for the source to work off %d message(s) published before the replay queue was bound", c.PrimaryReady-c.BufferReady-c.Fences)
	}
	return false, fmt.Sprintf("waiting for the source to be handed %d more message(s) from after the bind (%s; %d ready in the primary queue, %d in the replay queue, %d fence(s))",
		c.Prefetch-max(handed, 0), prefetch, c.PrimaryReady, c.BufferReady, c.Fences)
}
