package migration

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// EnterPhase moves status to phase p at now: it closes the timing of the
// phase being left, opens p's, and stamps StartTime/CompletionTime. Entering
// the current phase again changes nothing, so a re-run handler is harmless.
func EnterPhase(st *v1alpha1.StatefulMigrationStatus, p v1alpha1.Phase, now time.Time) {
	if st.Phase == p {
		return
	}
	t := metav1.NewTime(now)
	closeOpenTiming(st, now)
	if !p.IsFinal() {
		st.PhaseTimings = append(st.PhaseTimings, v1alpha1.PhaseTiming{Phase: p, Start: metav1.NewMicroTime(now)})
	}
	if st.StartTime == nil {
		st.StartTime = &t
	}
	if p.IsFinal() {
		st.CompletionTime = &t
		if len(st.PhaseTimings) > 0 {
			// from the first phase's precise start: StartTime has only
			// second precision
			st.TotalDuration = &metav1.Duration{Duration: now.Sub(st.PhaseTimings[0].Start.Time)}
		}
	}
	st.Phase = p
}

func closeOpenTiming(st *v1alpha1.StatefulMigrationStatus, now time.Time) {
	for i := range st.PhaseTimings {
		pt := &st.PhaseTimings[i]
		if pt.End == nil {
			end := metav1.NewMicroTime(now)
			pt.End = &end
			pt.Duration = &metav1.Duration{Duration: now.Sub(pt.Start.Time)}
		}
	}
}

// PhaseStart is when the current phase was entered (zero if unknown).
func PhaseStart(st *v1alpha1.StatefulMigrationStatus) time.Time {
	for _, pt := range st.PhaseTimings {
		if pt.Phase == st.Phase {
			return pt.Start.Time
		}
	}
	return time.Time{}
}

// PhaseDuration is how long phase p took (0 when it has not ended).
func PhaseDuration(st *v1alpha1.StatefulMigrationStatus, p v1alpha1.Phase) time.Duration {
	for _, pt := range st.PhaseTimings {
		if pt.Phase == p && pt.Duration != nil {
			return pt.Duration.Duration
		}
	}
	return 0
}

// SetCondition records a condition at now (its transition time moves only
// when its status changes).
func SetCondition(st *v1alpha1.StatefulMigrationStatus, generation int64, typ string, status metav1.ConditionStatus, reason, msg string, now time.Time) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now),
	})
}

// IsTrue reports whether condition typ is True.
func IsTrue(st *v1alpha1.StatefulMigrationStatus, typ string) bool {
	return meta.IsStatusConditionTrue(st.Conditions, typ)
}

// ConditionTime is when condition typ last changed (zero if absent).
func ConditionTime(st *v1alpha1.StatefulMigrationStatus, typ string) time.Time {
	if c := meta.FindStatusCondition(st.Conditions, typ); c != nil {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}
