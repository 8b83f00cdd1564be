package sdk

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Digest is the running digest over an applied sequence of messages. It is
// defined independently of this package's code so that a producer, a test or
// another language can compute the same reference:
//
//	d_0 = 32 zero bytes
//	d_n = SHA-256( d_{n-1} || seq_n as 8 bytes big-endian (two's complement)
//	                       || len(payload_n) as 4 bytes big-endian
//	                       || payload_n )
//
// Only sequenced messages enter it: a message without x-ms2m-seq has no
// identity a reference could name. Two consumers have the same digest exactly
// when they applied the same sequenced messages, with the same payloads, in the
// same order.
type Digest [sha256.Size]byte

// Next is the digest after applying (seq, payload) on top of d.
func (d Digest) Next(seq int64, payload []byte) Digest {
	var hdr [12]byte
	binary.BigEndian.PutUint64(hdr[:8], uint64(seq))
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(payload)))
	h := sha256.New()
	h.Write(d[:])
	h.Write(hdr[:])
	h.Write(payload)
	var out Digest
	h.Sum(out[:0])
	return out
}

// String is the lowercase hex form used in JSON and logs.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText makes the digest hex in JSON.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses the hex form.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses the hex form of a digest.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	b, err := hex.DecodeString(s)
	if err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	if len(b) != len(d) {
		return d, fmt.Errorf("digest %q: %d bytes, want %d", s, len(b), len(d))
	}
	copy(d[:], b)
	return d, nil
}
