package agent

import "testing"

func TestCheckpointImageRestore(t *testing.T) {
	for v, want := range map[string]bool{
		"2.1.9": true, "v2.1.9+ds1": true, "2.2.6": true, "2.2.7": false, "2.3.3": true, "2.3.4": false,
		"2.4.0": false, "2.4.2+unknown": false, "3.0.0": false, "1.7.20": true, "1.6.0": false, "garbage": false,
	} {
		if got, why := CheckpointImageRestore(v); got != want {
			t.Errorf("CheckpointImageRestore(%q) = %v (%s), want %v", v, got, why, want)
		}
	}
}
