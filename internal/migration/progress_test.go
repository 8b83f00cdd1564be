package migration

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func TestTransferStalled(t *testing.T) {
	start := time.Unix(1000, 0)
	limit := &v1alpha1.MigrationTimeouts{Progress: &metav1.Duration{Duration: 30 * time.Second}}
	ts := &v1alpha1.TransferStatus{}
	report := func(transferred, staged int64, at time.Duration, timeouts *v1alpha1.MigrationTimeouts) (bool, string) {
		before := Moved(ts)
		ts.BytesTransferred, ts.BytesStaged = transferred, staged
		return TransferStalled(ts, before, start.Add(at), timeouts)
	}
	if stalled, _ := report(0, 0, 0, limit); stalled {
		t.Fatal("the first look is a start, not a stall")
	}
	if stalled, _ := report(100, 0, 20*time.Second, limit); stalled || !ts.LastProgressTime.Time.Equal(start.Add(20*time.Second)) {
		t.Fatalf("bytes moved: last progress %v", ts.LastProgressTime)
	}
	if stalled, _ := report(100, 0, 50*time.Second, limit); stalled {
		t.Fatal("30s without a byte is not more than 30s")
	}
	if stalled, _ := report(100, 0, 50*time.Second, nil); stalled {
		t.Fatal("no progress timeout, no stall")
	}
	// The staging's bytes (a registry pull) count as progress too.
	if stalled, _ := report(100, 10, 55*time.Second, limit); stalled {
		t.Fatal("staging moved bytes")
	}
	stalled, why := report(100, 10, 86*time.Second, limit)
	if !stalled || !strings.Contains(why, "moved no byte for 31s (110 bytes moved so far), more than timeouts.progress (30s)") {
		t.Fatalf("stalled %v: %s", stalled, why)
	}
}
