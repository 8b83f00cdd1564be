package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/render"
)

// A ShadowPod source with the ms2m SDK is not deleted at cutover: it is
// told to let go of its queue (RELEASE) and answers once it has (RELEASED),
// while its pod keeps serving its HTTP clients. The stream then switches
// to the target at once, and the migration completes without waiting for
// the target's kubelet to confirm the Ready the cutover set (a PLEG relist
// and a sync: up to 1.6 s in the lab). The source's pod is removed after
// completion, once that confirmation has come (or kubeletConfirmPatience
// has passed), and the target is handed to the source's owner then:
// OwnershipTransferred says when. Clients never find no ready endpoint: the
// source serves until the target is confirmed.

// releasePatience bounds the wait for RELEASED. A source that does not
// answer in time is stopped by deleting its pod, as one without the SDK is.
const releasePatience = 5 * time.Second

// releases: the cutover takes the stream from the source with RELEASE.
// Only a ShadowPod source that said it understands RELEASE, consuming its
// queue (not held frozen), of a workload whose target is handed over by a
// ReplicaSet or to nobody (a StatefulSet's shadow takes its name through
// the identity swap, which wants the source gone, and the swap itself
// completes only once the StatefulSet owns its pod again).
func releases(s *scope) bool {
	st := &s.m.Status
	return s.hasBroker() && st.Broker != nil && st.Broker.SourceReleases &&
		st.Plan.Strategy == v1alpha1.StrategyShadowPod && st.Plan.Handoff != v1alpha1.HandoffHandoff && !st.Plan.HoldSource &&
		(st.Workload == nil || st.Workload.Kind != "StatefulSet") && !isSwap(s.m)
}

// cutOverReleasing is Finalizing for a source that releases. Its pod
// serves HTTP until after completion, so the stream need not wait for the
// target to join its Services: RELEASE goes out as soon as the target is
// Ready (with the cutover gate it opened), the stream switches, and the
// migration completes. The EndpointSlice controller lists the target
// meanwhile; the source's pod goes only once it has (retireReleasedSource).
func (r *Reconciler) cutOverReleasing(ctx context.Context, s *scope, target *corev1.Pod) (reconcile.Result, error) {
	if _, err := r.openForService(ctx, s, target); err != nil {
		return reconcile.Result{}, err
	}
	if !podReady(target) {
		// Its containers are not ready (or another readiness gate is
		// closed): the kubelet decides.
		return s.poll(), nil
	}
	if failed, err := r.gapBeforeStop(ctx, s); failed || err != nil {
		return next(), err
	}
	gone, err := r.releaseSource(ctx, s, target)
	if err != nil || !gone {
		return s.pollHandoff(), err
	}
	if res, ok, err := r.switchStream(ctx, s, target); !ok {
		return res, err
	}
	if res, arrived, err := r.memoryArrived(ctx, s); !arrived {
		return res, err
	}
	if !releases(s) {
		// RELEASE went unanswered and the source was deleted instead:
		// the target serves before its owner takes it, as for any other.
		if res, serving, err := r.bringIntoService(ctx, s, target); !serving || err != nil {
			return res, err
		}
		msg, done, err := r.transferOwnership(ctx, s, target)
		return r.completeWhenOwned(s, msg, done, err)
	}
	// No client went without an answer: the source serves on.
	downtime(&s.m.Status).Unavailable = &metav1.Duration{}
	r.complete(s)
	return reconcile.Result{}, nil
}

// releaseSource takes the stream from a source that releases: RELEASE
// once, then its answer marks it stopped. A source that was deleted
// meanwhile, or does not answer within releasePatience, is stopped as any
// other.
func (r *Reconciler) releaseSource(ctx context.Context, s *scope, target *corev1.Pod) (bool, error) {
	if s.isDone(v1alpha1.ConditionSourceStopped) {
		return true, nil
	}
	pod, err := r.sourcePod(ctx, s.m)
	if err != nil && !apierrors.IsNotFound(err) {
		return false, err
	}
	if err != nil || pod.Labels[render.LabelMigration] == s.m.Name || !pod.DeletionTimestamp.IsZero() {
		return r.stopSource(ctx, s, target, false)
	}
	h, err := s.brokerSession(ctx)
	if err != nil {
		return false, err
	}
	rec := s.brokerRecord()
	if rec.ReleaseSentTime == nil {
		s.markSourceStopping(pod)
		if err := h.Release(ctx, rec.SourceControlQueue, rec); err != nil {
			return false, err
		}
		sent := metav1.NewMicroTime(s.r.Clock.Now())
		rec.ReleaseSentTime = &sent
	}
	if err := s.awaitReports(ctx, h); err != nil {
		return false, err
	}
	if s.isDone(v1alpha1.ConditionSourceStopped) {
		return true, nil
	}
	if s.now.Sub(rec.ReleaseSentTime.Time) < releasePatience {
		return false, nil
	}
	rec.SourceReleases = false
	s.event(corev1.EventTypeWarning, "ReleaseNotAnswered", "StopSource",
		"source pod %s did not answer RELEASE within %s: it is stopped by deleting its pod", pod.Name, releasePatience)
	return r.stopSource(ctx, s, target, false)
}

// noteReleased takes a source's RELEASED for this migration: it consumes
// nothing but its control queue, and has acked everything it took.
func (s *scope) noteReleased(pod, migrationID string) {
	if pod != s.m.Spec.SourcePod || migrationID != s.id || s.isDone(v1alpha1.ConditionSourceStopped) {
		return
	}
	s.markSourceStopped(fmt.Sprintf("source pod %s let go of %s (RELEASED); its pod serves until the target's kubelet confirms %s Ready, then goes",
		pod, s.m.Spec.MessageQueueConfig.QueueName, s.m.Status.TargetPod))
}

// retireReleasedSource removes a completed migration's released source
// and leaves the target with the source's owner (OwnershipTransferred).
// The source goes once the target is a ready endpoint of its Services
// (TargetServing) and its kubelet has confirmed its Ready, or
// kubeletConfirmPatience after the target began to serve; at once when
// now is set (the migration is being deleted). A target gone meanwhile
// leaves nothing to hand over: the source goes all the same (it consumes
// nothing) and the condition says so.
func (r *Reconciler) retireReleasedSource(ctx context.Context, s *scope, now bool) (reconcile.Result, error) {
	if s.isDone(v1alpha1.ConditionOwnershipTransferred) || s.m.Status.Plan.Strategy != v1alpha1.StrategyShadowPod {
		return reconcile.Result{}, nil
	}
	target, err := r.targetPod(ctx, s.m)
	if err != nil {
		return reconcile.Result{}, err
	}
	src, err := r.sourcePod(ctx, s.m)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	if err != nil || src.Labels[render.LabelMigration] == s.m.Name {
		src = nil
	}
	if target == nil || !target.DeletionTimestamp.IsZero() {
		if src != nil {
			if err := r.deleteSource(ctx, src); err != nil {
				return reconcile.Result{}, err
			}
		}
		s.condition(v1alpha1.ConditionOwnershipTransferred, metav1.ConditionFalse, v1alpha1.ReasonTargetLost,
			"target pod "+s.m.Status.TargetPod+" went before it was handed to the source's owner; the released source was removed")
		return reconcile.Result{}, nil
	}
	if src != nil && src.DeletionTimestamp.IsZero() && !now {
		// Make before break: the source serves until the target is a
		// ready endpoint of its Services (see cutover.go)...
		if res, serving, err := r.bringIntoService(ctx, s, target); !serving || err != nil {
			return res, err
		}
	}
	if src != nil && src.DeletionTimestamp.IsZero() {
		// ...and its kubelet has confirmed the Ready the cutover set.
		serving := migration.ConditionTime(&s.m.Status, v1alpha1.ConditionTargetServing)
		if wait := kubeletConfirmPatience - s.now.Sub(serving); !now && !readyConfirmed(target) && wait > 0 {
			// The kubelet's write of Ready wakes the migration.
			s.condition(v1alpha1.ConditionOwnershipTransferred, metav1.ConditionFalse, "AwaitingKubelet",
				"the released source "+src.Name+" serves until the kubelet of "+target.Spec.NodeName+" confirms "+target.Name+" Ready")
			return reconcile.Result{RequeueAfter: wait}, nil
		}
		if err := r.deleteSource(ctx, src); err != nil {
			return reconcile.Result{}, err
		}
	}
	if src != nil {
		// (patches target in place: its owner is read below)
		if err := r.handOverToReplicaSet(ctx, src, target); err != nil {
			return reconcile.Result{}, fmt.Errorf("handing %s over to its ReplicaSet: %w", target.Name, err)
		}
	}
	msg, done, err := r.transferOwnership(ctx, s, target)
	if err != nil || !done {
		return s.poll(), err
	}
	s.done(v1alpha1.ConditionOwnershipTransferred, msg+"; the released source pod was removed")
	return reconcile.Result{}, nil
}

// sourceRetired: nothing of a completed migration's released source is
// left to do.
func sourceRetired(s *scope) bool {
	if !releases(s) || s.isDone(v1alpha1.ConditionOwnershipTransferred) {
		return true
	}
	c := meta.FindStatusCondition(s.m.Status.Conditions, v1alpha1.ConditionOwnershipTransferred)
	return c != nil && c.Reason == v1alpha1.ReasonTargetLost
}
