package bench

import (
	"strings"
	"time"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Row is one run's record: one CSV line.
type Row struct {
	Mode, Workload, Strategy, Transfer, Replay, Spec string
	Rate                                             int
	State                                            string
	Rep                                              int
	Started                                          time.Time
	// Phase is where the migration ended: Completed, Failed, or empty when
	// it never got that far.
	Phase string
	// Values holds the measured numbers by column; a missing key is a value
	// the run could not measure (never a zero).
	Values map[string]float64
	// Digest is match or mismatch, DigestNone for a consumer that keeps
	// none (at least once), empty when the target's state was not
	// verified.
	Digest string
	Error  string
}

// Key of the run the row records.
func (r Row) Key() Key {
	return Key{Mode: r.Mode, Workload: r.Workload, Spec: r.Spec, Rate: r.Rate, State: r.State, Rep: r.Rep}
}

// Failed reports a run that did not complete with a verified stream.
func (r Row) Failed() bool { return r.Error != "" || r.Phase != string(v1alpha1.PhaseCompleted) }

// Verified reports a run whose target applied exactly the producer's
// stream.
func (r Row) Verified() bool { return !r.Failed() && r.exactlyOnce() }

// StreamIntact reports a failed migration whose serving pod (the source
// after a rollback, the target when it failed forward) applied exactly the
// producer's stream: the failure lost nothing.
func (r Row) StreamIntact() bool { return r.Failed() && r.exactlyOnce() }

// DigestNone marks a consumer without a digest: one without the SDK.
const DigestNone = "none"

// exactlyOnce reports that the serving pod's stream was measured and is
// the producer's: digest equal, nothing lost, nothing applied twice. For a
// consumer without the SDK, which is promised at least once, it is that
// nothing was lost.
func (r Row) exactlyOnce() bool {
	lost, ok1 := r.Value(ColLost)
	dup, ok2 := r.Value(ColDuplicated)
	if r.Digest == DigestNone {
		return ok1 && lost == 0
	}
	return r.Digest == "match" && ok1 && ok2 && lost == 0 && dup == 0
}

// Completed reports a migration that reached Completed: its timings are
// comparable with other modes' even when a later check failed.
func (r Row) Completed() bool { return r.Phase == string(v1alpha1.PhaseCompleted) }

// Value is a column's number and whether it was measured.
func (r Row) Value(col string) (float64, bool) {
	v, ok := r.Values[col]
	return v, ok
}

func (r *Row) set(col string, v float64) {
	if r.Values == nil {
		r.Values = map[string]float64{}
	}
	r.Values[col] = v
}

func (r *Row) setDuration(col string, d time.Duration) { r.set(col, float64(d.Microseconds())/1000) }

// Metric columns. Phase columns follow the API's phases, so a phase added
// there gets its column without a change here.
const (
	ColWall            = "wall_ms"
	ColTotal           = "total_ms"
	ColDowntime        = "downtime_ms"
	ColStall           = "stall_ms"
	ColGap             = "gap_ms"
	ColUnavailable     = "unavailable_ms"
	ColHandoffGap      = "handoff_gap_ms"
	ColCheckpointBytes = "checkpoint_bytes"
	ColFreeze          = "freeze_ms"
	ColBytesMoved      = "bytes_moved"
	ColPublished       = "published"
	ColApplied         = "applied"
	ColBuffered        = "buffered"
	ColReplayed        = "replayed"
	ColLost            = "lost"
	ColDuplicated      = "duplicated"
)

// PhaseColumn is the column of a phase's duration.
func PhaseColumn(p v1alpha1.Phase) string { return strings.ToLower(string(p)) + "_ms" }

// CPUColumn and RSSColumn are a process role's CPU seconds and peak RSS.
func CPUColumn(role string) string { return role + "_cpu_s" }

// RSSColumn is a role's peak resident set in bytes.
func RSSColumn(role string) string { return role + "_peak_rss_bytes" }

// Roles of the measured processes.
const (
	RoleManager     = "manager"
	RoleSourceAgent = "agent_source"
	RoleTargetAgent = "agent_target"
)

// MetricColumns is every numeric column, in CSV order.
func MetricColumns() []string {
	cols := []string{ColWall, ColTotal}
	for _, p := range v1alpha1.Phases {
		cols = append(cols, PhaseColumn(p))
	}
	cols = append(cols, ColDowntime, ColStall, ColGap, ColUnavailable, ColHandoffGap,
		ColCheckpointBytes, ColFreeze, ColBytesMoved,
		ColPublished, ColApplied, ColBuffered, ColReplayed, ColLost, ColDuplicated)
	for _, role := range []string{RoleManager, RoleSourceAgent, RoleTargetAgent} {
		cols = append(cols, CPUColumn(role), RSSColumn(role))
	}
	return cols
}
