package controller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
)

// reconcileCheckpointing binds the replay queue, then checkpoints the
// source. The order is the correctness contract: every message the source
// acks after the checkpoint must already be duplicated into the replay
// queue, or the target would never see it.
func (r *Reconciler) reconcileCheckpointing(ctx context.Context, s *scope) (reconcile.Result, error) {
	pod, err := r.sourcePod(ctx, s.m)
	if apierrors.IsNotFound(err) || (err == nil && (pod.UID == "" || !pod.DeletionTimestamp.IsZero())) {
		return s.fail(v1alpha1.ReasonSourceLost, "source pod %q disappeared during the checkpoint", s.m.Spec.SourcePod)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if s.hasBroker() && !s.isDone(v1alpha1.ConditionTopologyPrepared) {
		h, err := s.brokerSession(ctx)
		if err == nil {
			err = h.Prepare(ctx, s.brokerRecord())
		}
		if err != nil {
			if broker.IsRetryable(err) {
				return reconcile.Result{}, err
			}
			return s.fail(broker.ReasonOf(err), "preparing the replay queue: %v", err)
		}
		bound := metav1.NewMicroTime(s.now)
		s.brokerRecord().ReplayBoundTime = &bound
		s.done(v1alpha1.ConditionTopologyPrepared, "replay queue "+s.brokerRecord().ReplayQueue+" bound before the checkpoint")
	}
	if s.hasBroker() && !s.isDone(v1alpha1.ConditionReplayCoversSource) {
		if res, covered, err := r.waitReplayCoverage(ctx, s); !covered {
			return res, err
		}
	}
	st := &s.m.Status
	op, err := r.Agents.Checkpoint(ctx, st.SourceNode, agentapi.CheckpointRequest{
		ID: s.id, Namespace: s.m.Namespace, Pod: pod.Name, PodUID: string(pod.UID), Container: st.ContainerName,
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	switch op.State {
	case agentapi.OpFailed:
		return s.fail(v1alpha1.ReasonCheckpointFailed, "checkpoint of %s/%s on %s: %s", pod.Name, st.ContainerName, st.SourceNode, op.Message)
	case agentapi.OpRunning:
		return s.poll(), nil
	}
	res := op.Result
	created := metav1.NewTime(res.CreatedAt)
	st.Checkpoint = &v1alpha1.CheckpointStatus{ID: s.id, SizeBytes: res.SizeBytes, CreatedAt: &created,
		FreezeDuration: &metav1.Duration{Duration: res.Freeze}}
	s.done(v1alpha1.ConditionCheckpointCreated, "checkpoint of container "+st.ContainerName+" on "+st.SourceNode)
	s.event(corev1.EventTypeNormal, v1alpha1.ConditionCheckpointCreated, "Checkpoint", "checkpointed %s/%s: %d bytes, source frozen %s", pod.Name, st.ContainerName, res.SizeBytes, res.Freeze)
	s.enter(v1alpha1.PhaseTransferring)
	return next(), nil
}

// waitReplayCoverage holds the checkpoint until the replay queue holds
// everything the source has not applied yet (see migration.ReplayCovers).
func (r *Reconciler) waitReplayCoverage(ctx context.Context, s *scope) (reconcile.Result, bool, error) {
	h, err := s.brokerSession(ctx)
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
		return res, false, ferr
	}
	rec := s.brokerRecord()
	p, err := h.Progress(ctx, rec)
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
		return res, false, ferr
	}
	var since time.Duration
	if rec.ReplayBoundTime != nil {
		since = s.now.Sub(rec.ReplayBoundTime.Time)
	}
	inFlight, known := r.inFlightBound(p.Primary, broker.DegradedBy(h) != nil)
	if !known {
		s.condition(v1alpha1.ConditionReplayCoversSource, metav1.ConditionFalse, "SourceBehind",
			"waiting for the broker to describe the source's consumer (its prefetch bounds what it holds unapplied)")
		return s.poll(), false, nil
	}
	covered, why := migration.ReplayCovers(migration.ReplayCoverage{PrimaryReady: p.Primary.Ready, BufferReady: p.Buffer.Ready,
		InFlight: inFlight, SinceBind: since})
	if !covered {
		s.condition(v1alpha1.ConditionReplayCoversSource, metav1.ConditionFalse, "SourceBehind", why)
		return s.poll(), false, nil
	}
	s.done(v1alpha1.ConditionReplayCoversSource, why)
	return reconcile.Result{}, true, nil
}

// inFlightBound bounds how many messages the source may hold delivered but
// unapplied: its consumer's prefetch, as the broker reports it. Unlimited
// prefetch is bounded by what the broker counts as unacked; a broker that
// cannot describe consumers (no management API) gets Options.AssumedPrefetch.
// known is false while the broker has yet to describe the consumer.
func (r *Reconciler) inFlightBound(primary broker.QueueStats, degraded bool) (int64, bool) {
	switch {
	case primary.Consumers == 0:
		return 0, true
	case primary.PrefetchKnown && primary.Prefetch > 0:
		return int64(primary.Prefetch), true
	case primary.PrefetchKnown:
		return max(primary.Unacked, r.Options.AssumedPrefetch), true
	case degraded:
		return r.Options.AssumedPrefetch, true
	}
	return 0, false
}
