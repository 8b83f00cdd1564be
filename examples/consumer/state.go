package main

import (
	"encoding/binary"
	"hash/fnv"
)

// memState is the consumer's in-memory state: a block of memory whose every
// page holds data, changed by every applied message. A restore that lost or
// zeroed pages shows as a checksum over the memory (scan) that no longer
// matches the one kept up to date message by message (expected); two
// consumers that applied the same messages hold the same checksum.
type memState struct {
	words    []uint64
	expected uint64
}

func newMemState(bytes int64) *memState {
	s := &memState{words: make([]uint64, bytes/8)}
	for i := range s.words {
		s.words[i] = splitmix64(uint64(i))
	}
	s.expected = s.scan()
	return s
}

// apply folds one message into one word chosen by the message, keeping the
// weighted sum in step: sum(w[i] * (2i+1)) changes by (new-old) * (2k+1).
func (s *memState) apply(seq int64, body []byte) {
	if len(s.words) == 0 {
		return
	}
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(seq))
	h.Write(b[:])
	h.Write(body)
	x := h.Sum64()
	k := x % uint64(len(s.words))
	old := s.words[k]
	s.words[k] = old ^ splitmix64(x)
	s.expected += (s.words[k] - old) * (2*k + 1)
}

// scan reads all of the memory.
func (s *memState) scan() uint64 {
	var sum uint64
	for i, w := range s.words {
		sum += w * (2*uint64(i) + 1)
	}
	return sum
}

func (s *memState) bytes() int64 { return int64(len(s.words)) * 8 }

// splitmix64 is a bijective mixer: distinct inputs, distinct non-trivial
// outputs, so no page starts as zeros.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
