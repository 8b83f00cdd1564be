package bench

import "testing"

func TestRowCorrectnessClasses(t *testing.T) {
	clean := map[string]float64{ColLost: 0, ColDuplicated: 0}
	for _, c := range []struct {
		name                   string
		row                    Row
		verified, streamIntact bool
	}{
		{"completed, exactly-once", Row{Phase: "Completed", Digest: "match", Values: clean}, true, false},
		{"completed, one lost", Row{Phase: "Completed", Digest: "match", Values: map[string]float64{ColLost: 1, ColDuplicated: 0}}, false, false},
		{"completed, digest mismatch", Row{Phase: "Completed", Digest: "mismatch", Values: clean}, false, false},
		{"completed, loss not measured", Row{Phase: "Completed", Digest: "match", Values: map[string]float64{ColDuplicated: 0}}, false, false},
		{"completed, check failed", Row{Phase: "Completed", Digest: "match", Values: clean, Error: "did not reach seq 10"}, false, true},
		{"failed, rolled back intact", Row{Phase: "Failed", Digest: "match", Values: clean, Error: "Timeout"}, false, true},
		{"failed, one applied twice", Row{Phase: "Failed", Digest: "match", Values: map[string]float64{ColLost: 0, ColDuplicated: 1}, Error: "Timeout"}, false, false},
		{"failed, not verified", Row{Phase: "Failed", Error: "Timeout"}, false, false},
		// a workload without the SDK is promised at least once
		{"at least once, some seen twice", Row{Phase: "Completed", Digest: DigestNone, Values: map[string]float64{ColLost: 0, ColDuplicated: 40}}, true, false},
		{"at least once broken", Row{Phase: "Completed", Digest: DigestNone, Values: map[string]float64{ColLost: 2, ColDuplicated: 40}}, false, false},
	} {
		if got := c.row.Verified(); got != c.verified {
			t.Errorf("%s: Verified() = %v, want %v", c.name, got, c.verified)
		}
		if got := c.row.StreamIntact(); got != c.streamIntact {
			t.Errorf("%s: StreamIntact() = %v, want %v", c.name, got, c.streamIntact)
		}
	}
}
