package main

import (
	"fmt"
	"testing"
)

func TestMemStateTracksItsMemory(t *testing.T) {
	s := newMemState(1 << 20)
	for seq := int64(1); seq <= 5000; seq++ {
		s.apply(seq, []byte(fmt.Sprintf("m%d", seq)))
	}
	if s.scan() != s.expected {
		t.Fatal("checksum kept per message disagrees with the memory")
	}
	// Lose one page, as a failed lazy-pages restore would.
	for i := 512; i < 1024; i++ {
		s.words[i] = 0
	}
	if s.scan() == s.expected {
		t.Fatal("a zeroed page went unnoticed")
	}
}

func TestMemStateDependsOnTheStream(t *testing.T) {
	a, b, c := newMemState(64<<10), newMemState(64<<10), newMemState(64<<10)
	for seq := int64(1); seq <= 100; seq++ {
		a.apply(seq, []byte("x"))
		b.apply(seq, []byte("x"))
		if seq != 50 {
			c.apply(seq, []byte("x"))
		}
	}
	if a.expected != b.expected || a.scan() != b.scan() {
		t.Fatal("the same stream gave different states")
	}
	if a.expected == c.expected {
		t.Fatal("a missing message left no trace")
	}
	if newMemState(0).bytes() != 0 {
		t.Fatal("zero state allocated memory")
	}
}

// BenchmarkMemStateScan is what one GET /state costs the consumer: a read
// of all of its memory, during which it applies no message.
func BenchmarkMemStateScan(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20, 512 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			s := newMemState(size)
			b.SetBytes(size)
			for b.Loop() {
				s.scan()
			}
		})
	}
}
