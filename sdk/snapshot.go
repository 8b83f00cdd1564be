package sdk

// Snapshot is a consumer's position in its stream: what a checkpoint carries
// and what a restored consumer continues from.
type Snapshot struct {
	// Processed counts applied messages, sequenced or not.
	Processed int64 `json:"processed"`
	// LastSeq is the highest sequence number applied (0: none yet).
	LastSeq int64 `json:"lastSeq"`
	// Digest is the running digest over the sequenced messages applied.
	Digest Digest `json:"digest"`
	// Unsequenced counts applied messages that carried no usable sequence
	// number: at-least-once, never de-duplicated, not in Digest.
	Unsequenced int64 `json:"unsequenced"`
}

// IsDuplicate reports whether a message with this sequence number was
// applied already and must be acked without applying it again. Messages
// without a sequence number never are.
func (s Snapshot) IsDuplicate(seq int64, sequenced bool) bool {
	return sequenced && seq <= s.LastSeq
}

// Apply is the snapshot after applying a message that IsDuplicate let
// through. missing is how many sequence numbers the message jumped over
// (0 when it is the next one, or the first one this consumer ever sees: a
// consumer may join a stream that started long ago).
func (s Snapshot) Apply(seq int64, sequenced bool, payload []byte) (next Snapshot, missing int64) {
	next = s
	next.Processed++
	if !sequenced {
		next.Unsequenced++
		return next, 0
	}
	if s.LastSeq > 0 && seq > s.LastSeq+1 {
		missing = seq - s.LastSeq - 1
	}
	next.LastSeq = seq
	next.Digest = s.Digest.Next(seq, payload)
	return next, missing
}
