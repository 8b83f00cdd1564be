package sdk

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"slices"
)

// Snapshot is a consumer's position in its stream: what a checkpoint carries
// and what a restored consumer continues from.
//
// A stream may have several producers: each stamps its own sequence
// (x-ms2m-seq) under its own identity (x-ms2m-producer), so the position is
// kept per producer. Messages without a producer identity belong to the
// producer "" (a stream with one producer that predates identities).
type Snapshot struct {
	// Processed counts applied messages, sequenced or not.
	Processed int64 `json:"processed"`
	// LastSeq sums the last sequence number applied of every producer:
	// with one producer, the highest sequence number applied (0: none yet).
	LastSeq int64 `json:"lastSeq"`
	// Digest combines the producers' running digests (CombineDigests):
	// with one producer, the running digest of its sequenced messages.
	Digest Digest `json:"digest"`
	// Unsequenced counts applied messages that carried no usable sequence
	// number: at-least-once, never de-duplicated, not in Digest.
	Unsequenced int64 `json:"unsequenced"`
	// Producers is the position in each producer's sequence. A snapshot
	// written before producers had identities has none: its LastSeq and
	// Digest are the producer "".
	Producers map[string]Position `json:"producers,omitempty"`
}

// Position is how far a consumer got in one producer's sequence.
type Position struct {
	// LastSeq is the highest sequence number applied.
	LastSeq int64 `json:"lastSeq"`
	// Digest is the running digest over that producer's messages applied.
	Digest Digest `json:"digest"`
}

// Position returns how far the consumer got in producer's sequence.
func (s Snapshot) Position(producer string) Position {
	if s.Producers == nil && producer == "" {
		return Position{LastSeq: s.LastSeq, Digest: s.Digest}
	}
	return s.Producers[producer]
}

// IsDuplicate reports whether the message with this producer and sequence
// number was applied already and must be acked without applying it again.
// Messages without a sequence number never are.
func (s Snapshot) IsDuplicate(producer string, seq int64, sequenced bool) bool {
	return sequenced && seq <= s.Position(producer).LastSeq
}

// Apply is the snapshot after applying a message that IsDuplicate let
// through. missing is how many of its producer's sequence numbers the
// message jumped over (0 when it is the next one, or the first one this
// consumer ever sees of that producer: a consumer may join a stream that
// started long ago).
func (s Snapshot) Apply(producer string, seq int64, sequenced bool, payload []byte) (next Snapshot, missing int64) {
	next = s
	next.Processed++
	if !sequenced {
		next.Unsequenced++
		return next, 0
	}
	pos := s.Position(producer)
	if pos.LastSeq > 0 && seq > pos.LastSeq+1 {
		missing = seq - pos.LastSeq - 1
	}
	// A new map per message keeps Snapshot a value: one handed out
	// earlier never changes under its holder.
	next.Producers = make(map[string]Position, len(s.Producers)+1)
	if s.Producers == nil && s.LastSeq > 0 {
		next.Producers[""] = Position{LastSeq: s.LastSeq, Digest: s.Digest}
	} else {
		maps.Copy(next.Producers, s.Producers)
	}
	next.Producers[producer] = Position{LastSeq: seq, Digest: pos.Digest.Next(seq, payload)}
	next.LastSeq = s.LastSeq - pos.LastSeq + seq
	next.Digest = CombineDigests(next.Producers)
	return next, missing
}

// CombineDigests is the digest of a stream with several producers, defined
// independently of this package's code like Digest: the producer's own
// digest when there is one producer; all zeros when there is none (the
// digest of a stream nothing was applied from, as a fresh Snapshot has it);
// otherwise SHA-256 over the producers
// in byte order of their identities, each as len(id) (4 bytes big-endian)
// || id || its digest. Messages of different producers may interleave
// differently in two queues fed by one exchange, so only each producer's
// order is part of the state; the combination does not depend on the
// interleaving.
func CombineDigests(producers map[string]Position) Digest {
	if len(producers) == 0 {
		return Digest{}
	}
	if len(producers) == 1 {
		for _, p := range producers {
			return p.Digest
		}
	}
	h := sha256.New()
	for _, id := range slices.Sorted(maps.Keys(producers)) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(id)))
		h.Write(n[:])
		h.Write([]byte(id))
		d := producers[id].Digest
		h.Write(d[:])
	}
	var out Digest
	h.Sum(out[:0])
	return out
}
