package sdk

import (
	"encoding/json"
	"testing"
)

// Known answers computed outside Go (Python hashlib) from the definition
// in Digest's documentation.
func TestDigestKnownAnswers(t *testing.T) {
	var d Digest
	for _, step := range []struct {
		seq     int64
		payload string
		want    string
	}{
		{1, "hello", "a03c1b2952b3846911c8abc185d219ab712ae9a85f31c96ceb255b062a97dd20"},
		{2, "", "71b9260f2d23d9324e7c321c7a4ff9248359c107a1351fc49ad62da6163c5a36"},
		{3, "\x00\xff", "c28d71783c787411ccf6c59ba6d9370033e8edf7fd703b195172a77397f1b12e"},
	} {
		d = d.Next(step.seq, []byte(step.payload))
		if d.String() != step.want {
			t.Fatalf("after seq %d: %s, want %s", step.seq, d, step.want)
		}
	}
}

func TestDigestOrderMatters(t *testing.T) {
	var z Digest
	a := z.Next(1, []byte("a")).Next(2, []byte("b"))
	b := z.Next(2, []byte("b")).Next(1, []byte("a"))
	if a == b {
		t.Fatal("digest ignores order")
	}
	// The length prefix keeps (seq, payload) boundaries: "ab" is not "a"+"b".
	if z.Next(1, []byte("ab")) == z.Next(1, []byte("a")).Next(0, []byte("b")) {
		t.Fatal("digest ambiguous")
	}
}

func TestDigestJSON(t *testing.T) {
	d := Digest{}.Next(1, []byte("hello"))
	b, err := json.Marshal(Snapshot{LastSeq: 1, Processed: 1, Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"processed":1,"lastSeq":1,"digest":"a03c1b2952b3846911c8abc185d219ab712ae9a85f31c96ceb255b062a97dd20","unsequenced":0}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil || s.Digest != d {
		t.Fatalf("round trip: %v, %s", err, s.Digest)
	}
	if _, err := ParseDigest("abc"); err == nil {
		t.Fatal("short digest parsed")
	}
}
