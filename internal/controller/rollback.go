package controller

import (
	"context"
	"fmt"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/render"
)

// rollback undoes a failed migration before it marks it Failed: target pod
// deleted, broker topology put back, checkpoint files removed. The source
// never stopped, so it serves as before. Past the point of no return there
// is nothing to roll back to: the migration fails as it stands, saying so,
// and removes the replay topology unless a live target still replays it.
func (r *Reconciler) rollback(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	if migration.PastPointOfNoReturn(st) {
		return r.failForward(ctx, s)
	}
	done, err := r.undo(ctx, s)
	if err != nil || !done {
		return s.poll(), err
	}
	s.done(v1alpha1.ConditionRolledBack, "target removed, broker topology restored; the source kept serving")
	if st.Abort != nil && st.Abort.Outcome == v1alpha1.AbortPending {
		st.Abort.Outcome, st.Abort.Message = v1alpha1.AbortSucceeded, "rolled back; the source kept serving"
	}
	r.markFailed(s)
	return reconcile.Result{}, nil
}

// undo removes everything the migration created, in an order that keeps
// the source's stream intact: the target goes first (it may be consuming the
// replay queue), then the broker changes, then files on the nodes. It
// reports whether all is gone.
func (r *Reconciler) undo(ctx context.Context, s *scope) (bool, error) {
	st := &s.m.Status
	target, err := r.targetPod(ctx, s.m)
	if err != nil {
		return false, err
	}
	if target != nil && target.Labels[render.LabelMigration] == s.m.Name {
		if target.DeletionTimestamp.IsZero() {
			r.withdrawCheckpoint(ctx, s)
			uid := target.UID
			if err := r.Delete(ctx, target, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
				return false, err
			}
		}
		if err := r.forceDeleteOnLostNode(ctx, s, target); err != nil {
			return false, err
		}
		return false, nil // wait until it is gone
	}
	// Pending changes nothing on the broker; from Checkpointing on, the
	// replay queue may exist even if its record never reached the status
	// (a crash, a conflicting write): Teardown also removes it by name.
	if s.hasBroker() && st.Phase != v1alpha1.PhasePending && !s.isDone(v1alpha1.ConditionTopologyRestored) {
		h, err := s.brokerSession(ctx)
		if err != nil {
			return false, err
		}
		if err := s.removeTargetTopology(ctx, h, "broker topology as before the migration"); err != nil {
			return false, err
		}
	}
	return true, r.cleanupCheckpoint(ctx, s)
}

// forceDeleteOnLostNode removes a terminating target pod whose node has
// not been Ready for Options.NodeLostGrace: that node's kubelet would never
// confirm the deletion, and the rollback would wait on it forever. What
// still runs there (a partition, not a dead node) consumes nothing of the
// source's stream once the replay topology goes, which the rollback
// removes next. The delete carries the target's UID.
func (r *Reconciler) forceDeleteOnLostNode(ctx context.Context, s *scope, target *corev1.Pod) error {
	if target.DeletionTimestamp.IsZero() {
		return nil
	}
	lost, why, err := r.nodeLost(ctx, target.Spec.NodeName, s.now)
	if err != nil || !lost {
		return err
	}
	uid := target.UID
	if err := r.Delete(ctx, target, client.Preconditions{UID: &uid}, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	s.event(corev1.EventTypeWarning, "TargetForceDeleted", "Rollback", "target pod %s force-deleted: its node %s %s", target.Name, target.Spec.NodeName, why)
	return nil
}

// nodeLost reports whether node has been gone or not Ready for at least
// Options.NodeLostGrace, and how.
func (r *Reconciler) nodeLost(ctx context.Context, name string, now time.Time) (bool, string, error) {
	node := &corev1.Node{}
	if err := r.Get(ctx, client.ObjectKey{Name: name}, node); apierrors.IsNotFound(err) {
		return true, "is gone", nil
	} else if err != nil {
		return false, "", err
	}
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			return false, "", nil
		}
		since := now.Sub(c.LastTransitionTime.Time)
		return since >= r.Options.NodeLostGrace, fmt.Sprintf("has not been Ready for %s (%s)", since.Round(time.Second), c.Reason), nil
	}
	return false, "", nil // a node that never reported: not ours to judge
}

// withdrawCheckpoint tells a warm target's node that its checkpoint will
// never be staged: the container waits for it in ms2m's runtime handler,
// and the kubelet deletes the pod only once that create has failed. An
// agent that does not answer only makes the deletion slower.
func (r *Reconciler) withdrawCheckpoint(ctx context.Context, s *scope) {
	if !r.warmTarget(s) || s.isDone(v1alpha1.ConditionCheckpointStaged) {
		return
	}
	if err := r.Agents.Withdraw(ctx, s.m.Status.TargetNode, s.id); err != nil {
		log.FromContext(ctx).Info("could not withdraw the checkpoint from the target node; its pod goes once the runtime handler gives up", "node", s.m.Status.TargetNode, "error", err)
	}
}

func (r *Reconciler) markFailed(s *scope) {
	st := &s.m.Status
	s.enter(v1alpha1.PhaseFailed)
	s.condition(v1alpha1.ConditionProgressing, metav1.ConditionFalse, st.FailureReason, st.FailureMessage)
	s.condition(v1alpha1.ConditionFailed, metav1.ConditionTrue, st.FailureReason, st.FailureMessage)
	s.event(corev1.EventTypeWarning, string(v1alpha1.PhaseFailed), "Fail", "migration failed in %s (%s): %s", st.FailedPhase, st.FailureReason, st.FailureMessage)
	observeCompletion(s.m)
}

// handleAbort answers spec.abort: before the point of no return the
// migration rolls back; after it the abort is rejected and the migration
// completes. It reports whether this reconcile is done.
func (r *Reconciler) handleAbort(s *scope) (reconcile.Result, bool) {
	st := &s.m.Status
	if st.Abort == nil {
		st.Abort = &v1alpha1.AbortStatus{RequestedAt: metav1.NewTime(s.now), Outcome: v1alpha1.AbortPending}
		if migration.PastPointOfNoReturn(st) {
			st.Abort.Outcome = v1alpha1.AbortRejected
			st.Abort.Message = "too late: the source had already stopped and the target serves; the migration completes instead"
			s.event(corev1.EventTypeWarning, "AbortRejected", "Abort", "%s", st.Abort.Message)
			return reconcile.Result{}, false
		}
		s.event(corev1.EventTypeNormal, "AbortRequested", "Abort", "abort requested in phase %s: rolling back", st.Phase)
	}
	if st.Abort.Outcome == v1alpha1.AbortRejected {
		return reconcile.Result{}, false
	}
	res, _ := s.fail(v1alpha1.ReasonAborted, "aborted by spec.abort in phase %s", st.Phase)
	return res, true
}

// checkDeadlines fails a migration whose phase or total budget ran out.
// Past the point of no return failing would roll nothing back (the source
// is gone): the overrun is said, in the Progressing condition and an
// Event, and the migration goes on for Options.FailForwardAfter, then
// fails forward (the target kept, the replay topology and checkpoint
// removed), so that no migration waits forever.
func (r *Reconciler) checkDeadlines(s *scope) (reconcile.Result, bool) {
	over, msg := migration.Overrun(&s.m.Spec, &s.m.Status, s.now)
	if !over {
		return reconcile.Result{}, false
	}
	if migration.PastPointOfNoReturn(&s.m.Status) {
		// The overdue wait itself is bounded: Options.FailForwardAfter
		// past the deadline, the migration fails forward as it stands.
		if late, _ := migration.Overrun(&s.m.Spec, &s.m.Status, s.now.Add(-r.Options.FailForwardAfter)); late {
			res, _ := s.fail(v1alpha1.ReasonTimeout, "%s, and %s more past the point of no return: failing forward", msg, r.Options.FailForwardAfter)
			return res, true
		}
		if c := meta.FindStatusCondition(s.m.Status.Conditions, v1alpha1.ConditionProgressing); c == nil || c.Reason != v1alpha1.ReasonOverdue {
			s.condition(v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonOverdue, msg+"; past the point of no return, rolling forward")
			s.event(corev1.EventTypeWarning, v1alpha1.ReasonOverdue, "Timeout", "%s; past the point of no return, rolling forward", msg)
		}
		return reconcile.Result{}, false
	}
	res, _ := s.fail(v1alpha1.ReasonTimeout, "%s", msg)
	return res, true
}

// reconcileDelete treats deletion as an abort: a migration still able to
// roll back does so; one past the point of no return finishes first (its
// cutover also removes the replay topology). The finalizer goes once
// nothing of the migration is left to undo, or once Options.DeletionDeadline
// has passed since the deletion: whatever the broker's or a node's state, a
// deleted migration goes, and an Event says what it left.
func (r *Reconciler) reconcileDelete(ctx context.Context, s *scope) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(s.m, Finalizer) {
		return reconcile.Result{}, nil
	}
	res, done, err := r.cleanUpDeleted(ctx, s)
	if !done {
		waited := s.now.Sub(s.m.DeletionTimestamp.Time)
		if waited < r.Options.DeletionDeadline {
			if err != nil {
				s.condition(v1alpha1.ConditionCleanupBlocked, metav1.ConditionTrue, "Retrying", err.Error())
			}
			return minRequeue(res, r.Options.DeletionDeadline-waited), err
		}
		why := "it had not finished"
		if c := meta.FindStatusCondition(s.m.Status.Conditions, v1alpha1.ConditionCleanupBlocked); c != nil && c.Status == metav1.ConditionTrue {
			why = c.Message
		}
		if err != nil {
			why = err.Error()
		}
		s.event(corev1.EventTypeWarning, v1alpha1.ReasonCleanupAbandoned, "Delete",
			"gave up cleaning up %s after the deletion (phase %s): %s; what it set up may be left in place: its replay queue and control queues on the broker, the target pod, the checkpoint on the nodes and in the registry",
			r.Options.DeletionDeadline, s.m.Status.Phase, why)
	}
	controllerutil.RemoveFinalizer(s.m, Finalizer)
	if err := r.Update(ctx, s.m); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// cleanUpDeleted rolls back or finishes a deleted migration; done when
// nothing of it is left to undo.
func (r *Reconciler) cleanUpDeleted(ctx context.Context, s *scope) (reconcile.Result, bool, error) {
	st := &s.m.Status
	if !st.Phase.IsFinal() && migration.PastPointOfNoReturn(st) && st.FailureReason == "" {
		res, err := r.reconcileNormal(ctx, s)
		return res, false, err
	}
	if st.Phase == v1alpha1.PhaseCompleted {
		if _, err := r.afterCompletion(ctx, s); err != nil {
			return s.poll(), false, err
		}
		if !sourceRetired(s) {
			return s.poll(), false, nil
		}
	}
	if !st.Phase.IsFinal() || st.Phase == v1alpha1.PhaseFailed {
		if st.FailureReason == "" && !st.Phase.IsFinal() {
			s.fail(v1alpha1.ReasonDeleted, "the StatefulMigration was deleted in phase %s", st.Phase) //nolint:errcheck // never errors
		}
		if !migration.PastPointOfNoReturn(st) {
			done, err := r.undo(ctx, s)
			if err != nil || !done {
				return s.poll(), false, err
			}
		} else if err := r.cleanupCheckpoint(ctx, s); err != nil {
			return s.poll(), false, err
		}
	}
	return reconcile.Result{}, true, nil
}

// minRequeue makes res look again no later than after d.
func minRequeue(res reconcile.Result, d time.Duration) reconcile.Result {
	if res.RequeueAfter == 0 || res.RequeueAfter > d {
		res.RequeueAfter = d
	}
	return res
}

// deleteControlQueue removes a control queue of a pod that is gone. MS2M's
// queue names carry no namespace, so one still consumed belongs to a live
// pod of the same name elsewhere: it is left alone, which is said in an
// Event rather than holding the migration up.
func (s *scope) deleteControlQueue(ctx context.Context, h broker.Handoff, q string) {
	_ = s.deleteControlQueueWaiting(ctx, h, q, 0)
}

// deleteControlQueueWaiting is deleteControlQueue that, for up to patience
// into the rollback, returns a retryable refusal instead of keeping the
// queue: a pod whose link to the broker was cut is gone before the broker
// has noticed that its connection is dead (two missed heartbeats).
func (s *scope) deleteControlQueueWaiting(ctx context.Context, h broker.Handoff, q string, patience time.Duration) error {
	err := h.DeleteControlQueue(ctx, q)
	if err == nil {
		return nil
	}
	if broker.IsRetryable(err) && s.rollingBackFor() < patience {
		return err
	}
	s.event(corev1.EventTypeWarning, "ControlQueueKept", "Cleanup", "left control queue %s in place: %v", q, err)
	return nil
}

// rollingBackFor is how long ago the migration failed (forever when it
// has not).
func (s *scope) rollingBackFor() time.Duration {
	c := meta.FindStatusCondition(s.m.Status.Conditions, v1alpha1.ConditionProgressing)
	if c == nil || c.Status != metav1.ConditionFalse || s.m.Status.FailureReason == "" {
		return time.Duration(math.MaxInt64)
	}
	return s.now.Sub(c.LastTransitionTime.Time)
}

// deadConnectionPatience bounds the wait for the broker to drop the
// connection of a target that went while cut off from it.
const deadConnectionPatience = time.Minute

// deleteControlQueues removes every control queue of pod (see
// deleteControlQueue).
func (s *scope) deleteControlQueues(ctx context.Context, h broker.Handoff, pod string) {
	for _, q := range controlQueues(s.m.Namespace, pod) {
		s.deleteControlQueue(ctx, h, q)
	}
}

// failForward ends a migration that failed after the source stopped. A
// target that took over the stream stays. One that did not is of no use:
// a Sequential target goes, and the StatefulSet is scaled back to recreate
// its pod — from its image, the memory state lost, as the condition says.
func (r *Reconciler) failForward(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	msg := "the source had already stopped; the target " + st.TargetPod + " was kept"
	if !s.isDone(v1alpha1.ConditionTargetSwitched) && st.Plan.Strategy == v1alpha1.StrategySequential {
		target, err := r.targetPod(ctx, s.m)
		if err != nil {
			return reconcile.Result{}, err
		}
		if target != nil {
			uid := target.UID
			if err := r.Delete(ctx, target, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
				return reconcile.Result{}, err
			}
			return s.poll(), nil
		}
		if err := r.restoreOwner(ctx, s); err != nil {
			return reconcile.Result{}, err
		}
		msg = "the source had already stopped and the target never took over; its owner recreates the pod from its image, without the migrated state"
	}
	if err := r.teardownUnneeded(ctx, s); err != nil {
		return reconcile.Result{}, err
	}
	if postCopyHoldsSource(st) && !s.isDone(v1alpha1.ConditionMemoryTransferred) {
		// Still held for its pages, which will not all be taken now: it is
		// ended, never thawed (the checkpoint's cleanup thaws a held source
		// for a rollback, and this one has been replaced).
		r.endPostCopySource(ctx, s)
	}
	// The target restored from the checkpoint already, or will never: the
	// checkpoint (the workload's memory) has no use left.
	if err := r.cleanupCheckpoint(ctx, s); err != nil {
		return reconcile.Result{}, err
	}
	s.condition(v1alpha1.ConditionRolledBack, metav1.ConditionFalse, "PastPointOfNoReturn", msg)
	r.markFailed(s)
	return reconcile.Result{}, nil
}

// teardownUnneeded removes the replay topology of a migration that fails
// forward, unless a live target still replays from it. Left bound, a
// replay queue nobody consumes fills until the broker's alarms block every
// publisher.
func (r *Reconciler) teardownUnneeded(ctx context.Context, s *scope) error {
	st := &s.m.Status
	if !s.hasBroker() || s.isDone(v1alpha1.ConditionTopologyRestored) {
		return nil
	}
	target, err := r.targetPod(ctx, s.m)
	if err != nil {
		return err
	}
	replaying := target != nil && target.DeletionTimestamp.IsZero() && restoreFailure(target, st.ContainerName) == "" &&
		!s.isDone(v1alpha1.ConditionTargetSwitched)
	rec := s.brokerRecord()
	if replaying {
		s.event(corev1.EventTypeWarning, "ReplayTopologyKept", "Cleanup",
			"kept replay queue %s: target %s may still replay from it; delete it once the target consumes %s",
			rec.ReplayQueue, target.Name, s.m.Spec.MessageQueueConfig.QueueName)
		return nil
	}
	h, err := s.brokerSession(ctx)
	if err != nil {
		return err
	}
	return s.removeTargetTopology(ctx, h, "replay queue removed; bindings as before the migration")
}

// removeTargetTopology removes the replay topology and the control queues
// of a target that will not consume them (one that took the source's name
// keeps them with the name), and records TopologyRestored with msg.
func (s *scope) removeTargetTopology(ctx context.Context, h broker.Handoff, msg string) error {
	st := &s.m.Status
	if err := h.Teardown(ctx, s.brokerRecord()); err != nil {
		return err
	}
	if st.TargetPod != "" && st.TargetPod != s.m.Spec.SourcePod {
		for _, q := range controlQueues(s.m.Namespace, st.TargetPod) {
			if err := s.deleteControlQueueWaiting(ctx, h, q, deadConnectionPatience); err != nil {
				return err
			}
		}
	}
	s.done(v1alpha1.ConditionTopologyRestored, msg)
	return nil
}
