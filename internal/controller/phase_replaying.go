package controller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/control"
)

// reconcileReplaying tells the restored target to replay the buffered
// stream and waits until it has caught up (or, in Cutoff mode, until the
// cutoff), while a ShadowPod source keeps serving.
func (r *Reconciler) reconcileReplaying(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	if !s.hasBroker() {
		s.done(v1alpha1.ConditionReplayCaughtUp, "no messageQueueConfig: nothing to replay")
		s.enter(v1alpha1.PhaseFinalizing)
		return next(), nil
	}
	if res, lost := r.checkTarget(ctx, s); lost {
		return res, nil
	}
	if res, lost, err := r.pagesLost(ctx, s); lost {
		return res, err
	}
	h, err := s.brokerSession(ctx)
	if err != nil {
		return s.retryOrFail(err, v1alpha1.ReasonReplayFailed)
	}
	rec := s.brokerRecord()
	if direct(s) {
		// Nothing to replay and nothing to tell: the target, restored
		// into a new connection, consumes its queue as it always did.
		s.done(v1alpha1.ConditionReplayCaughtUp, "Handoff: the primary queue holds everything the checkpoint lacks; the target, without the ms2m SDK, consumes it directly")
		s.enter(v1alpha1.PhaseFinalizing)
		return next(), nil
	}
	if !s.isDone(v1alpha1.ConditionReplayStarted) {
		p, err := h.Progress(ctx, rec)
		if err != nil {
			return s.retryOrFail(err, v1alpha1.ReasonReplayFailed)
		}
		q, listening, err := r.targetControlQueue(ctx, s, h)
		if err != nil {
			return s.retryOrFail(err, v1alpha1.ReasonReplayFailed)
		}
		if !listening {
			return s.poll(), nil
		}
		if err := h.StartReplay(ctx, q, rec); err != nil {
			return s.retryOrFail(err, v1alpha1.ReasonReplayFailed)
		}
		started := metav1.NewMicroTime(s.now)
		st.Messages = &v1alpha1.MessageStatus{Buffered: p.Buffer.Depth(), Remaining: p.Buffer.Depth(), ReplayStartTime: &started}
		s.done(v1alpha1.ConditionReplayStarted, "START_REPLAY sent to "+st.TargetPod)
		s.event(corev1.EventTypeNormal, v1alpha1.ConditionReplayStarted, "Replay", "target %s replays %d buffered message(s) from %s", st.TargetPod, p.Buffer.Depth(), rec.ReplayQueue)
		// A small backlog is replayed in tens of milliseconds: looked at
		// as often as the cutover's waits.
		return s.pollHandoff(), nil
	}
	p, err := h.Progress(ctx, rec)
	if err != nil {
		return s.retryOrFail(err, v1alpha1.ReasonReplayFailed)
	}
	if err := s.readReports(ctx, h); err != nil {
		return s.retryOrFail(err, v1alpha1.ReasonReplayFailed)
	}
	if st.FailureReason != "" {
		return next(), nil // the target reported a gap: roll back
	}
	updateMessages(st, p)
	d := migration.DecideReplay(migration.ReplayState{
		Mode: st.Plan.ReplayMode, Cutoff: replayCutoff(s.m),
		Started:   replayStart(st),
		Remaining: p.Buffer.Depth(), CaughtUpBelow: r.Options.CaughtUpBelow,
		Overdue: migration.PastPointOfNoReturn(st) && overrun(s),
	}, s.now)
	if !d.CutOver {
		return reconcile.Result{RequeueAfter: min(d.Recheck, s.r.Options.HandoffPoll)}, nil
	}
	if d.CaughtUp {
		s.done(v1alpha1.ConditionReplayCaughtUp, d.Reason)
	} else {
		s.condition(v1alpha1.ConditionReplayCaughtUp, metav1.ConditionFalse, "CutoffReached", d.Reason)
	}
	s.enter(v1alpha1.PhaseFinalizing)
	return next(), nil
}

// direct: the Handoff technique for a target without the ms2m SDK. It is
// sent no control message: it reads its control queue at its own pace (a
// poll, seconds), while it takes its own queue at once on reconnecting,
// which is all the Handoff needs of it.
func direct(s *scope) bool {
	st := &s.m.Status
	return st.Plan.Handoff == v1alpha1.HandoffHandoff && s.hasBroker() && st.Broker != nil && !s.sourceHasSDK()
}

// updateMessages reports the replay's progress. The buffer keeps filling
// from the live stream until it is sealed, so Buffered is everything that
// has gone through it: replayed (acked by the target) plus remaining.
func updateMessages(st *v1alpha1.StatefulMigrationStatus, p broker.Progress) {
	if st.Messages == nil {
		st.Messages = &v1alpha1.MessageStatus{}
	}
	m := st.Messages
	m.Remaining = p.Buffer.Depth()
	if p.Buffer.Acked > m.Replayed {
		m.Replayed = p.Buffer.Acked
	}
	if total := m.Replayed + m.Remaining; total > m.Buffered {
		m.Buffered = total
	}
}

// retryOrFail retries what may pass (an unreachable broker: the phase
// timeout bounds it) and fails on what will not.
func (s *scope) retryOrFail(err error, reason string) (reconcile.Result, error) {
	if broker.IsRetryable(err) || s.refusedOnceAccepted(err) {
		return reconcile.Result{}, err
	}
	return s.fail(reason, "%v", err)
}

// refusedOnceAccepted: the broker refuses credentials it has accepted for
// this migration already (its topology is prepared). That is a broker
// going down or coming up, not a wrong password: the AMQP client reports a
// connection dropped during its handshake as a refusal of the credentials
// or the vhost. Retried like any outage, within the phase's deadline.
func (s *scope) refusedOnceAccepted(err error) bool {
	return broker.ReasonOf(err) == v1alpha1.ReasonCredentials && s.isDone(v1alpha1.ConditionTopologyPrepared)
}

func replayStart(st *v1alpha1.StatefulMigrationStatus) time.Time {
	if st.Messages != nil && st.Messages.ReplayStartTime != nil {
		return st.Messages.ReplayStartTime.Time
	}
	return migration.ConditionTime(st, v1alpha1.ConditionReplayStarted)
}

// listenGrace is how long a restored target may take to listen on its
// control queue before START_REPLAY is queued for it anyway, when the
// source's control queue was not found (a migration started before it
// was recorded).
const listenGrace = 15 * time.Second

// targetControlQueue is where the target reads: the queue of the kind its
// source read, under the target pod's name. The target is the same
// program, so START_REPLAY can go there at once, whether the workload
// consumes the queue or polls it, and whether it has reconnected yet or
// not: the message waits in the queue.
func (r *Reconciler) targetControlQueue(ctx context.Context, s *scope, h broker.Handoff) (string, bool, error) {
	ns, pod := s.m.Namespace, s.m.Status.TargetPod
	switch s.brokerRecord().SourceControlQueue {
	case control.PodQueueName(ns, s.m.Spec.SourcePod):
		return control.PodQueueName(ns, pod), true, nil
	case control.QueueName(s.m.Spec.SourcePod):
		return control.QueueName(pod), true, nil
	}
	for _, q := range controlQueues(ns, pod) {
		n, err := h.Listeners(ctx, q)
		if err != nil {
			return "", false, err
		}
		if n > 0 {
			return q, true, nil
		}
	}
	if s.now.Sub(migration.PhaseStart(&s.m.Status)) < listenGrace {
		return "", false, nil
	}
	return control.QueueName(pod), true, nil
}

// sourceControlQueue finds the control queue the source reads: the one
// of its two with a consumer, else MS2M's (a workload that polls its
// queue shows no consumer, and only a workload written for MS2M polls).
func sourceControlQueue(ctx context.Context, h broker.Handoff, namespace, pod string) (string, error) {
	for _, q := range controlQueues(namespace, pod) {
		n, err := h.Listeners(ctx, q)
		if err != nil {
			return "", err
		}
		if n > 0 {
			return q, nil
		}
	}
	return control.QueueName(pod), nil
}

// controlQueues are every control queue a pod may have used.
func controlQueues(namespace, pod string) []string {
	return []string{control.PodQueueName(namespace, pod), control.QueueName(pod)}
}

func overrun(s *scope) bool {
	over, _ := migration.Overrun(&s.m.Spec, &s.m.Status, s.now)
	return over
}
