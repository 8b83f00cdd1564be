package migration

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Moved is how many bytes of the checkpoint have moved so far: sent or
// pushed, then staged on the target node.
func Moved(t *v1alpha1.TransferStatus) int64 {
	if t == nil {
		return 0
	}
	return t.BytesTransferred + t.BytesStaged
}

// TransferStalled notes the transfer's progress (before is Moved as it
// was before the latest report went into t) and says whether it has moved
// no byte for longer than the progress timeout, and for how long.
func TransferStalled(t *v1alpha1.TransferStatus, before int64, now time.Time, timeouts *v1alpha1.MigrationTimeouts) (bool, string) {
	if t.LastProgressTime == nil || Moved(t) != before {
		t.LastProgressTime = &metav1.Time{Time: now}
		return false, ""
	}
	if timeouts == nil || timeouts.Progress == nil {
		return false, ""
	}
	still := now.Sub(t.LastProgressTime.Time)
	if still <= timeouts.Progress.Duration {
		return false, ""
	}
	return true, fmt.Sprintf("the checkpoint's transfer moved no byte for %s (%d bytes moved so far), more than timeouts.progress (%s) allows",
		still.Round(time.Second), Moved(t), timeouts.Progress.Duration)
}
