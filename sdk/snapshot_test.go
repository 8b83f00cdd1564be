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
		if s.IsDuplicate(m.seq, m.sequenced) {
			continue
		}
		var miss int64
		s, miss = s.Apply(m.seq, m.sequenced, []byte{byte(m.seq)})
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
	if _, miss := (Snapshot{}).Apply(500, true, nil); miss != 0 {
		t.Fatalf("first message counted %d missing", miss)
	}
	if _, miss := (Snapshot{LastSeq: 10, Processed: 10}).Apply(15, true, nil); miss != 4 {
		t.Fatalf("missing %d, want 4", miss)
	}
}
