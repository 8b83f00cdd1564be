package sdk

import (
	"fmt"
	"math"

	amqp "github.com/rabbitmq/amqp091-go"
)

// SeqHeader carries a message's sequence number in its producer's stream
// (1, 2, 3, ...).
const SeqHeader = "x-ms2m-seq"

// ProducerHeader carries the identity of the producer whose sequence
// x-ms2m-seq counts. Each producer numbers its own messages, so several
// producers on one queue, and a producer that restarts under a new
// identity, are de-duplicated apart. Absent, the message belongs to the
// producer "".
const ProducerHeader = "x-ms2m-producer"

// FenceHeader marks a fence message: put into a consumer's queue by the
// migration controller, behind everything in it, to learn when the consumer
// has been handed all of that. A consumer acks it unapplied; it is no
// message of the stream. The value names the migration.
const FenceHeader = "x-ms2m-fence"

// IsFence reports whether headers mark a fence message.
func IsFence(h amqp.Table) bool {
	_, ok := h[FenceHeader]
	return ok
}

// ProducerOf reads the producer identity from a message's headers ("" when
// absent, or when it is not a string).
func ProducerOf(h amqp.Table) string {
	switch v := h[ProducerHeader].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// SeqOf reads the sequence number from a message's headers. ok is false when
// the header is absent. A header that is present but not a positive integer
// is an error: the message cannot be placed in the sequence.
//
// AMQP field tables carry integers in several widths and signednesses, and
// clients pick the width from the value (amqp091 decodes 'b','B','s','u','I',
// 'i','l' as int8, uint8, int16, uint16, int32, uint32, int64); all of them
// are accepted.
func SeqOf(h amqp.Table) (seq int64, ok bool, err error) {
	v, present := h[SeqHeader]
	if !present {
		return 0, false, nil
	}
	switch n := v.(type) {
	case int64:
		seq = n
	case int32:
		seq = int64(n)
	case int16:
		seq = int64(n)
	case int8:
		seq = int64(n)
	case int:
		seq = int64(n)
	case uint8:
		seq = int64(n)
	case uint16:
		seq = int64(n)
	case uint32:
		seq = int64(n)
	case uint64:
		if n > math.MaxInt64 {
			return 0, true, fmt.Errorf("%s %d overflows int64", SeqHeader, n)
		}
		seq = int64(n)
	case uint:
		if uint64(n) > math.MaxInt64 {
			return 0, true, fmt.Errorf("%s %d overflows int64", SeqHeader, n)
		}
		seq = int64(n)
	default:
		return 0, true, fmt.Errorf("%s has type %T, want an integer", SeqHeader, v)
	}
	if seq < 1 {
		return 0, true, fmt.Errorf("%s %d: sequence numbers start at 1", SeqHeader, seq)
	}
	return seq, true, nil
}
