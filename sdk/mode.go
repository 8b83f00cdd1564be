package sdk

import "fmt"

// Mode is where a consumer takes messages from.
type Mode int

const (
	// Primary: consuming the workload's own queue. A process that was never
	// restored starts here.
	Primary Mode = iota
	// AwaitingReplay: restored into a new pod, consuming nothing but its
	// control queue until the controller names a replay queue. Consuming the
	// primary queue now would split it round-robin with the source.
	AwaitingReplay
	// Replaying: consuming the replay queue of START_REPLAY.
	Replaying
	// Draining: after END_REPLAY, emptying the replay queue before switching
	// to the primary queue.
	Draining
	// Released: a source whose target has taken the stream over (RELEASE):
	// it consumes nothing but its control queue, for good, and keeps
	// running until its pod goes.
	Released
)

var modeNames = [...]string{"Primary", "AwaitingReplay", "Replaying", "Draining", "Released"}

func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("Mode(%d)", int(m))
	}
	return modeNames[m]
}

// MarshalText makes the mode its name in JSON.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// route is the consumer's position in the handoff; step is its whole
// transition function, free of I/O, so that every path through a handoff
// can be checked in a table.
type route struct {
	mode Mode
	// replay is the queue of Replaying and Draining.
	replay string
	// next is a START_REPLAY that arrived while draining: replayed once the
	// drain is done rather than abandoning what is left of the current one.
	next string
}

type eventKind int

const (
	evRestored eventKind = iota // the identity files name a new pod
	evStartReplay
	evEndReplay
	evDrained // the replay queue was found empty after END_REPLAY
	evRelease
)

type event struct {
	kind  eventKind
	queue string // evStartReplay
}

// step returns the route after ev, and a note when ev was out of place (the
// route may still change: the note says how it was handled).
func (r route) step(ev event) (route, string) {
	switch ev.kind {
	case evRestored:
		var note string
		if r.mode == Replaying || r.mode == Draining {
			note = fmt.Sprintf("restored again while %s %s: waiting for a new START_REPLAY", r.mode, r.replay)
		}
		return route{mode: AwaitingReplay}, note

	case evStartReplay:
		switch r.mode {
		case AwaitingReplay:
			return route{mode: Replaying, replay: ev.queue}, ""
		case Replaying:
			if r.replay == ev.queue {
				return r, "duplicate START_REPLAY ignored"
			}
			return route{mode: Replaying, replay: ev.queue},
				fmt.Sprintf("START_REPLAY %s while replaying %s: following the newer one", ev.queue, r.replay)
		case Draining:
			if r.replay == ev.queue {
				return r, "START_REPLAY for the queue being drained ignored"
			}
			r.next = ev.queue
			return r, fmt.Sprintf("START_REPLAY %s while draining %s: replaying it after the drain", ev.queue, r.replay)
		default: // Primary
			// Only a restored target is sent START_REPLAY, so this process is
			// one whose restore its identity files did not reveal (no UID
			// mounted and the same pod name). Replaying is safe: anything
			// already applied is skipped as a duplicate.
			return route{mode: Replaying, replay: ev.queue},
				"START_REPLAY while consuming the primary queue: following it (restore not detected; is the pod UID mounted?)"
		}

	case evEndReplay:
		switch r.mode {
		case Replaying:
			return route{mode: Draining, replay: r.replay, next: r.next}, ""
		case Draining:
			return r, "duplicate END_REPLAY ignored"
		case AwaitingReplay:
			// The replay queue is unknown, and switching to the primary queue
			// would lose whatever the source acked after the checkpoint: wait,
			// visibly, rather than diverge silently.
			return r, "END_REPLAY without START_REPLAY ignored: still waiting for START_REPLAY"
		default:
			return r, fmt.Sprintf("END_REPLAY in mode %s ignored: nothing is being replayed", r.mode)
		}

	case evRelease:
		switch r.mode {
		case Primary:
			return route{mode: Released}, ""
		case Released:
			return r, "duplicate RELEASE ignored"
		default:
			// A restored target is never asked to let go: its stream is
			// the one being handed over to it.
			return r, fmt.Sprintf("RELEASE while %s ignored: only a source consuming its primary queue lets go of it", r.mode)
		}

	case evDrained:
		if r.mode != Draining {
			return r, fmt.Sprintf("drain finished in mode %s ignored", r.mode)
		}
		if r.next != "" {
			return route{mode: Replaying, replay: r.next}, ""
		}
		return route{mode: Primary}, ""
	}
	return r, fmt.Sprintf("unknown event %d ignored", ev.kind)
}

// source is the queue to consume in this route ("" for none: awaiting, or
// draining by basic.get).
func (r route) source(primary string) string {
	switch r.mode {
	case Primary:
		return primary
	case Replaying:
		return r.replay
	}
	return ""
}
