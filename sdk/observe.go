package sdk

// Counters count what a consumer did since it started (a restored process:
// since the process it was restored from started, the counters are in the
// checkpoint too; a consumer built from a Snapshot starts them at zero).
type Counters struct {
	// Applied messages: the handler succeeded.
	Applied int64 `json:"applied"`
	// Duplicates acked without applying: sequence at or below LastSeq.
	Duplicates int64 `json:"duplicates"`
	// Replayed is the part of Applied that came from a replay queue.
	Replayed int64 `json:"replayed"`
	// Gaps counts applied messages whose sequence number jumped over
	// others; Missing sums the numbers jumped over. Both stay zero in a
	// correct handoff.
	Gaps    int64 `json:"gaps"`
	Missing int64 `json:"missing"`
	// Malformed messages carried an x-ms2m-seq that is not a positive
	// integer; they were applied as unsequenced.
	Malformed int64 `json:"malformed"`
	// HandlerErrors: the handler failed, the message went back to its queue.
	HandlerErrors int64 `json:"handlerErrors"`
	// Fences counts the migration controller's fence messages, acked
	// unapplied.
	Fences int64 `json:"fences"`
	// Reconnects counts broker sessions after the first.
	Reconnects int64 `json:"reconnects"`
	// Restores counts identity changes: restores into a new pod.
	Restores int64 `json:"restores"`
	// ControlMessages received; ControlIgnored the part that was out of
	// place or not understood.
	ControlMessages int64 `json:"controlMessages"`
	ControlIgnored  int64 `json:"controlIgnored"`
	// ControlRefused counts control messages and fences from a broker user
	// not in Config.ControlSenders (or naming none): acked, not acted on.
	ControlRefused int64 `json:"controlRefused"`
}

// Hooks are called from the consumer's goroutine, in order; they must not
// block for long and must not call back into the Consumer's Run.
type Hooks struct {
	// Applied follows a successful handler call, with the snapshot after it.
	Applied func(m Message, after Snapshot)
	// Skipped follows a duplicate's ack.
	Skipped func(m Message)
	// ModeChanged follows every mode change.
	ModeChanged func(from, to Mode)
	// Restored follows the detection of a restore into a new pod.
	Restored func(from, to Identity)
	// Connected follows the setup of a broker session; Disconnected its end.
	Connected    func()
	Disconnected func(err error)
}
