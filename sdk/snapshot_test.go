package sdk

import "testing"

// A stream with repeats, an unsequenced message and a hole, applied through
// IsDuplicate/Apply as the consumer does.
func TestSnapshotDedup(t *testing.T) {
	type in struct {
		seq       int64
		sequenced bool
	}
	stream := []in{{1, true}, {2, true}, {2, true}, {1, true}, {0, false}, {3, true}, {3, true}, {6, true}, {4, true}, {7, true}}
	var s Snapshot
	var applied []int64
	var missing int64
	for _, m := range stream {
		if s.IsDuplicate("", m.seq, m.sequenced) {
			continue
		}
		var miss int64
		s, miss = s.Apply("", m.seq, m.sequenced, []byte{byte(m.seq)})
		missing += miss
		applied = append(applied, m.seq)
	}
	want := []int64{1, 2, 0, 3, 6, 7}
	if len(applied) != len(want) {
		t.Fatalf("applied %v, want %v", applied, want)
	}
	for i := range want {
		if applied[i] != want[i] {
			t.Fatalf("applied %v, want %v", applied, want)
		}
	}
	if s.Processed != 6 || s.Unsequenced != 1 || s.LastSeq != 7 || missing != 2 {
		t.Fatalf("snapshot %+v, missing %d", s, missing)
	}
	var ref Digest
	for _, q := range []int64{1, 2, 3, 6, 7} {
		ref = ref.Next(q, []byte{byte(q)})
	}
	if s.Digest != ref {
		t.Fatal("digest covers more or less than the sequenced messages applied")
	}
}

// A consumer that joins a stream late sees no gap; one restored from a
// snapshot does when the replay starts past its LastSeq.
func TestSnapshotGapOnlyAfterAStart(t *testing.T) {
	if _, miss := (Snapshot{}).Apply("", 500, true, nil); miss != 0 {
		t.Fatalf("first message counted %d missing", miss)
	}
	if _, miss := (Snapshot{LastSeq: 10, Processed: 10}).Apply("", 15, true, nil); miss != 4 {
		t.Fatalf("missing %d, want 4", miss)
	}
}

// Two producers, each with its own sequence, interleaved differently in
// two queues (as one exchange may route them): both orders give the same
// snapshot, nothing of either producer is taken for a duplicate of the
// other, and a producer that restarts under a new identity starts a
// sequence of its own.
func TestSnapshotPerProducer(t *testing.T) {
	type in struct {
		producer string
		seq      int64
	}
	apply := func(stream []in) (Snapshot, []in) {
		var s Snapshot
		var applied []in
		for _, m := range stream {
			if s.IsDuplicate(m.producer, m.seq, true) {
				continue
			}
			var miss int64
			s, miss = s.Apply(m.producer, m.seq, true, []byte(m.producer))
			if miss != 0 {
				t.Fatalf("%v: %d missing", m, miss)
			}
			applied = append(applied, m)
		}
		return s, applied
	}
	a := []in{{"a", 1}, {"b", 1}, {"a", 2}, {"b", 2}, {"b", 3}, {"a", 3}, {"a2", 1}, {"a2", 2}}
	b := []in{{"b", 1}, {"b", 2}, {"a", 1}, {"b", 3}, {"a", 2}, {"a", 3}, {"a2", 1}, {"a2", 2}}
	sa, applied := apply(append(a, in{"a", 2}, in{"b", 3}, in{"a2", 1}))
	sb, _ := apply(b)
	if len(applied) != len(a) {
		t.Fatalf("applied %v, want every message of %v once", applied, a)
	}
	if sa.Digest != sb.Digest || sa.LastSeq != 8 || sb.LastSeq != 8 {
		t.Fatalf("interleavings differ: %+v vs %+v", sa, sb)
	}
	var ref map[string]Position = map[string]Position{}
	for _, m := range a {
		p := ref[m.producer]
		ref[m.producer] = Position{LastSeq: m.seq, Digest: p.Digest.Next(m.seq, []byte(m.producer))}
	}
	if sa.Digest != CombineDigests(ref) {
		t.Fatal("digest is not the combination of the producers' reference digests")
	}
	if got := sa.Position("a2").LastSeq; got != 2 {
		t.Fatalf("restarted producer a2 at %d, want 2", got)
	}
}

// A state nothing was applied to has the digest of an empty stream, and
// that digest is the same however it is computed: the zero value a fresh
// Snapshot carries and the combination of no producers. A replica that only
// ever saw unsequenced messages keeps it too.
func TestEmptyStreamDigest(t *testing.T) {
	var fresh Snapshot
	if got := CombineDigests(nil); got != fresh.Digest {
		t.Fatalf("CombineDigests(none) = %s, a fresh snapshot has %s", got, fresh.Digest)
	}
	s, _ := fresh.Apply("", 0, false, []byte("unsequenced"))
	if s.Digest != CombineDigests(s.Producers) || s.Digest != (Digest{}) {
		t.Fatalf("after an unsequenced message: digest %s, combination %s", s.Digest, CombineDigests(s.Producers))
	}
}

// A snapshot from before producer identities (no Producers) is the
// producer "": it keeps de-duplicating and extending that stream.
func TestSnapshotWithoutProducersIsTheAnonymousStream(t *testing.T) {
	var d Digest
	for q := int64(1); q <= 3; q++ {
		d = d.Next(q, nil)
	}
	old := Snapshot{Processed: 3, LastSeq: 3, Digest: d}
	if !old.IsDuplicate("", 3, true) || old.IsDuplicate("p", 3, true) {
		t.Fatal("an old snapshot's sequence must be the producer \"\"")
	}
	next, miss := old.Apply("", 4, true, nil)
	if miss != 0 || next.LastSeq != 4 || next.Digest != d.Next(4, nil) {
		t.Fatalf("continued to %+v (missing %d)", next, miss)
	}
	if old.Producers != nil {
		t.Fatal("Apply changed the snapshot it was called on")
	}
}
