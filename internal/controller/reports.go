package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/control"
)

// A target with the ms2m SDK answers START_REPLAY and reports, once it has
// drained the replay queue and switched to the primary queue, what the
// handoff brought it: how much it replayed, how many duplicates it
// skipped, and any gap in a producer's sequence (messages lost). The
// controller puts that in status, so that a migration never reports
// success over a loss its target saw. A workload without the SDK does not
// report: it gets at-least-once delivery, and status says the stream was
// not verified.

// reportSilence is how long a target that announced its reports may stay
// silent after it was seen on the primary queue before the controller
// goes on without its last report (its connection dropped, say).
const reportSilence = 10 * time.Second

// readReports takes the target's new reports into status.
func (s *scope) readReports(ctx context.Context, h broker.Handoff) error {
	return s.takeReports(h.Reports(ctx, s.brokerRecord()))
}

// answerWait bounds how long a reconcile waits in line for an answer the
// cutover asked for (RELEASED, REPLAY_DONE): an SDK consumer answers in
// milliseconds, and the next look would come a HandoffPoll and a reconcile
// later.
const answerWait = 200 * time.Millisecond

// awaitReports is readReports that waits up to answerWait for the first.
func (s *scope) awaitReports(ctx context.Context, h broker.Handoff) error {
	return s.takeReports(h.AwaitReports(ctx, s.brokerRecord(), answerWait))
}

// takeReports takes what a read of the reports gave, oldest first.
func (s *scope) takeReports(reports []control.Report, err error) error {
	if err != nil {
		return err
	}
	for _, r := range reports {
		s.takeReport(r)
	}
	return nil
}

func (s *scope) takeReport(r control.Report) {
	st := &s.m.Status
	if r.Type == control.FencePassed {
		// The source's, before its checkpoint (a Sequential target has
		// the same name): never the target's handoff.
		if r.Fence == s.id && r.Pod == s.m.Spec.SourcePod {
			s.brokerRecord().SourcePassedFence = true
			s.brokerRecord().SourceReleases = s.brokerRecord().SourceReleases || r.Releases
		}
		return
	}
	if r.Type == control.Released {
		s.noteReleased(r.Pod, r.Fence)
		return
	}
	if r.Pod != "" && r.Pod != st.TargetPod {
		return // an earlier target's, of a migration of the same name
	}
	if st.Messages == nil {
		st.Messages = &v1alpha1.MessageStatus{}
	}
	t := st.Messages.Target
	if t == nil {
		t = &v1alpha1.TargetReport{}
		st.Messages.Target = t
	}
	t.Reporting = true
	if t.Done || (r.Type != control.ReplayDone && r.Type != control.StreamGap) {
		return
	}
	t.Gaps, t.Lost = max(t.Gaps, r.Gaps), max(t.Lost, r.Missing)
	if r.Type == control.StreamGap {
		s.targetSawGap(r)
		return
	}
	t.Done = true
	t.Replayed, t.DuplicatesSkipped = r.Replayed, r.Duplicates
	if r.Missing > 0 {
		s.targetSawGap(r)
		return
	}
	s.done(v1alpha1.ConditionStreamIntact, fmt.Sprintf("target %s reported no gap: %d message(s) replayed, %d applied before the checkpoint skipped",
		st.TargetPod, r.Replayed, r.Duplicates))
}

// targetSawGap records a loss the target reported. While the source still
// serves, the migration fails and rolls back: the source applied what the
// target is missing, so nothing is lost. Past the point of no return the
// loss stands, and status says so rather than report a clean success.
func (s *scope) targetSawGap(r control.Report) {
	st := &s.m.Status
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStreamIntact)
	said := c != nil && c.Reason == v1alpha1.ReasonMessagesLost
	if !migration.PastPointOfNoReturn(st) {
		msg := fmt.Sprintf("target %s found %d message(s) missing from the stream in %d gap(s) while it replayed; the source, still serving, has applied them", st.TargetPod, r.Missing, r.Gaps)
		s.condition(v1alpha1.ConditionStreamIntact, metav1.ConditionFalse, v1alpha1.ReasonMessagesLost, msg)
		_, _ = s.fail(v1alpha1.ReasonMessagesLost, "%s", msg)
		return
	}
	msg := fmt.Sprintf("target %s found %d message(s) missing from the stream in %d gap(s) during the handoff: they were lost", st.TargetPod, r.Missing, r.Gaps)
	s.condition(v1alpha1.ConditionStreamIntact, metav1.ConditionFalse, v1alpha1.ReasonMessagesLost, msg)
	if !said {
		s.event(corev1.EventTypeWarning, v1alpha1.ReasonMessagesLost, "Verify", "%s", msg)
	}
}

// targetReporting: the target announced that it reports.
func targetReporting(st *v1alpha1.StatefulMigrationStatus) bool {
	return st.Messages != nil && st.Messages.Target != nil && st.Messages.Target.Reporting
}

// targetReportedSwitch: the target reported its switch to the primary
// queue.
func targetReportedSwitch(st *v1alpha1.StatefulMigrationStatus) bool {
	return targetReporting(st) && st.Messages.Target.Done
}

// switchedWithoutReport decides, for a target seen on the primary queue
// whose last report has not come, whether to go on without it: at once
// for a target that never reported, after reportSilence for one that
// announced reports.
func (s *scope) switchedWithoutReport() bool {
	st := &s.m.Status
	if !targetReporting(st) {
		s.condition(v1alpha1.ConditionStreamIntact, metav1.ConditionUnknown, v1alpha1.ReasonNotReported,
			"target "+st.TargetPod+" does not report its handoff (a workload without the ms2m SDK): it gets every message at least once, unverified")
		return true
	}
	sent := migration.ConditionTime(st, v1alpha1.ConditionTargetSwitched)
	if sent.IsZero() || s.now.Sub(sent) < reportSilence {
		return false
	}
	s.condition(v1alpha1.ConditionStreamIntact, metav1.ConditionUnknown, v1alpha1.ReasonNotReported,
		fmt.Sprintf("target %s consumes the primary queue but sent no report within %s of END_REPLAY", st.TargetPod, reportSilence))
	return true
}
