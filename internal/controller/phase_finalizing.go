package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
)

// reconcileFinalizing is the cutover, one recorded step at a time:
//
//	open the target's cutover gate, Ready with it
//	→ TargetServing (in its Services' endpoints; the source still serves)
//	→ SourceStopped (the source's consumer is gone)
//	→ ReplaySealed (new messages reach only the primary queue)
//	→ the replay queue drains → END_REPLAY → TargetSwitched (the target consumes the primary)
//	→ TopologyRestored (replay topology removed, bindings as before)
//	→ checkpoint files removed → Completed
//
// Each step is a condition, so a restart resumes at the first undone one.
// A source with the ms2m SDK is released rather than stopped, and its pod
// goes after completion (release.go).
func (r *Reconciler) reconcileFinalizing(ctx context.Context, s *scope) (reconcile.Result, error) {
	if r.swapping(s) {
		// The shadow has the stream; the identity swap moves it into the
		// StatefulSet's name and deletes it on the way.
		return r.finishSwap(ctx, s)
	}
	target, res, lost := r.liveTarget(ctx, s)
	if lost {
		return res, nil
	}
	// A ShadowPod source serves until its target has all of its memory: a
	// page stream that breaks before rolls back to it.
	if !postCopyHoldsSource(&s.m.Status) {
		if res, arrived, err := r.memoryArrived(ctx, s); !arrived {
			return res, err
		}
	}
	if releases(s) {
		return r.cutOverReleasing(ctx, s, target)
	}
	// Make before break: the source goes only once the target serves, in
	// its Services' endpoints (see cutover.go).
	if res, serving, err := r.bringIntoService(ctx, s, target); !serving || err != nil {
		return res, err
	}
	if failed, err := r.gapBeforeStop(ctx, s); failed || err != nil {
		return next(), err
	}
	gone, err := r.stopSource(ctx, s, target, false)
	if err != nil || !gone {
		return s.pollHandoff(), err
	}
	if s.hasBroker() {
		res, ok, err := r.switchStream(ctx, s, target)
		if !ok {
			return res, err
		}
	}
	if r.swapping(s) {
		return r.finishSwap(ctx, s)
	}
	if res, arrived, err := r.memoryArrived(ctx, s); !arrived {
		return res, err
	}
	// The checkpoint is removed once the migration has completed (see
	// afterCompletion): the target never needs it again (it is not
	// restored twice), and the cutover need not wait for it.
	if s.isDone(v1alpha1.ConditionOwnershipTransferred) {
		r.complete(s)
		return reconcile.Result{}, nil
	}
	msg, done, err := r.transferOwnership(ctx, s, target)
	return r.completeWhenOwned(s, msg, done, err)
}

// memoryArrived: with PostCopy, the target runs before its memory has all
// come; the migration is complete only once the last page has (the target
// node's agent says so when its lazy-pages daemon ends). A Sequential
// target takes the stream over before, faulting in what it touches; a
// ShadowPod source serves until then, and a broken page stream rolls the
// migration back to it.
func (r *Reconciler) memoryArrived(ctx context.Context, s *scope) (reconcile.Result, bool, error) {
	st := &s.m.Status
	if st.Plan.MemoryTechnique != v1alpha1.MemoryPostCopy || s.isDone(v1alpha1.ConditionMemoryTransferred) {
		return reconcile.Result{}, true, nil
	}
	p, err := r.Agents.Pages(ctx, st.TargetNode, st.Checkpoint.ID)
	if err != nil {
		return reconcile.Result{}, false, err
	}
	notePageBytes(st, p.Bytes)
	switch p.State {
	case agentapi.OpFailed:
		res, err := failPagesLost(s, p)
		return res, false, err
	case agentapi.OpRunning:
		s.condition(v1alpha1.ConditionMemoryTransferred, metav1.ConditionFalse, "PagesComing",
			fmt.Sprintf("%d bytes of memory have come from %s so far", p.Bytes, st.SourceNode))
		return s.poll(), false, nil
	}
	if !postCopyHoldsSource(st) {
		s.done(v1alpha1.ConditionMemoryTransferred, fmt.Sprintf("every page (%d bytes) has come from the source's dump on %s", p.Bytes, st.SourceNode))
		return reconcile.Result{}, true, nil
	}
	r.endPostCopySource(ctx, s)
	s.done(v1alpha1.ConditionMemoryTransferred, fmt.Sprintf("every page (%d bytes) has come from %s; the source has ended", p.Bytes, st.SourceNode))
	return reconcile.Result{}, true, nil
}

// endReplayPatience bounds how long the cutover waits for a target that
// does not report to take END_REPLAY from its control queue.
const endReplayPatience = 30 * time.Second

// tookEndReplay: the target's control queue holds nothing more for it, or
// it has not taken END_REPLAY within endReplayPatience (status says so).
func (r *Reconciler) tookEndReplay(ctx context.Context, s *scope, h broker.Handoff) (bool, error) {
	st := &s.m.Status
	n, err := h.Waiting(ctx, s.brokerRecord().ControlQueue)
	if err != nil || n == 0 {
		return err == nil, err
	}
	sent := migration.ConditionTime(st, v1alpha1.ConditionTargetSwitched)
	if sent.IsZero() || s.now.Sub(sent) < endReplayPatience {
		return false, nil
	}
	s.event(corev1.EventTypeWarning, "ControlNotTaken", "Cutover", "target %s consumes %s but left %d control message(s) untaken for %s; going on",
		st.TargetPod, s.m.Spec.MessageQueueConfig.QueueName, n, endReplayPatience)
	return true, nil
}

// gapBeforeStop reads the target's reports one last time before the source
// is stopped: a gap it found while replaying still rolls back then.
func (r *Reconciler) gapBeforeStop(ctx context.Context, s *scope) (bool, error) {
	st := &s.m.Status
	if !s.hasBroker() || migration.PastPointOfNoReturn(st) || !targetReporting(st) {
		return false, nil
	}
	h, err := s.brokerSession(ctx)
	if err != nil {
		return false, err
	}
	if err := s.readReports(ctx, h); err != nil {
		return false, err
	}
	return st.FailureReason != "", nil
}

// completeWhenOwned ends Finalizing with the outcome of the step that
// leaves the target with its owner: once it is recorded, the migration is
// complete.
func (r *Reconciler) completeWhenOwned(s *scope, msg string, done bool, err error) (reconcile.Result, error) {
	if owned, res, err := recordOwnership(s, msg, done, err); !owned {
		return res, err
	}
	r.complete(s)
	return reconcile.Result{}, nil
}

// recordOwnership takes the outcome of a step that leaves the target with
// its owner: a failure fails the migration, an unfinished step is looked
// at again, a finished one is recorded (OwnershipTransferred) and owned is
// true. When owned is false the phase returns res and err.
func recordOwnership(s *scope, msg string, done bool, err error) (owned bool, res reconcile.Result, _ error) {
	var f *failure
	if errors.As(err, &f) {
		res, err := s.fail(f.reason, "%s", f.msg)
		return false, res, err
	}
	if err != nil || !done {
		return false, s.poll(), err
	}
	s.done(v1alpha1.ConditionOwnershipTransferred, msg)
	return true, reconcile.Result{}, nil
}

// cleanupCheckpoint removes the checkpoint from both nodes and the
// registry (it holds the workload's memory, secrets included), once. What
// cannot be removed at all (a registry that refuses deletes) is said in
// the CheckpointRemoved condition and a Warning Event rather than holding
// the migration up.
func (r *Reconciler) cleanupCheckpoint(ctx context.Context, s *scope) error {
	if s.m.Status.Checkpoint == nil {
		return r.deleteSavedTarget(ctx, s)
	}
	if checkpointSettled(s.m) {
		return nil
	}
	left, err := r.removeCheckpoint(ctx, s)
	if err != nil {
		return err
	}
	if err := r.deleteSavedTarget(ctx, s); err != nil {
		return err
	}
	if len(left) > 0 {
		msg := "left behind, remove it by hand (it holds the workload's memory): " + strings.Join(left, "; ")
		s.condition(v1alpha1.ConditionCheckpointRemoved, metav1.ConditionFalse, v1alpha1.ReasonLeftBehind, msg)
		s.event(corev1.EventTypeWarning, v1alpha1.ReasonLeftBehind, "Cleanup", "%s", msg)
		return nil
	}
	s.done(v1alpha1.ConditionCheckpointRemoved, "checkpoint removed from "+s.m.Status.SourceNode+", "+s.m.Status.TargetNode+" and the registry")
	return nil
}

// checkpointSettled: the checkpoint is removed, or what is left cannot be
// removed by ms2m at all. An agent that was away is asked again.
func checkpointSettled(m *v1alpha1.StatefulMigration) bool {
	c := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionCheckpointRemoved)
	return c != nil && (c.Status == metav1.ConditionTrue || c.Reason == v1alpha1.ReasonLeftBehind)
}

// removeCheckpoint asks both nodes' agents to remove the checkpoint and
// returns what they could not remove at all. A node whose agent does not
// answer still holds it: that is no success, and is asked again (a node
// that no longer exists took it with it, which is said).
func (r *Reconciler) removeCheckpoint(ctx context.Context, s *scope) ([]string, error) {
	st := &s.m.Status
	var left []string
	for _, node := range []string{st.SourceNode, st.TargetNode} {
		err := r.Agents.Cleanup(ctx, node, st.Checkpoint.ID, st.Checkpoint.Image)
		switch {
		case errors.Is(err, agentapi.ErrLeftBehind):
			left = append(left, err.Error())
		case errors.Is(err, agentapi.ErrNoAgent):
			if gerr := r.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{}); apierrors.IsNotFound(gerr) {
				left = append(left, fmt.Sprintf("node %s no longer exists: what it held of the checkpoint stays on its disks", node))
				continue
			}
			s.condition(v1alpha1.ConditionCheckpointRemoved, metav1.ConditionFalse, v1alpha1.ReasonAgentUnavailable,
				fmt.Sprintf("the checkpoint is still on node %s, whose agent does not answer (%v): asked again until it does", node, err))
			return nil, fmt.Errorf("removing the checkpoint from %s: %w", node, err)
		case err != nil:
			return nil, fmt.Errorf("removing the checkpoint from %s: %w", node, err)
		}
	}
	return left, nil
}

// swapping: a StatefulSet's ShadowPod migration whose shadow has taken the
// stream over, now waiting for its identity swap.
func (r *Reconciler) swapping(s *scope) bool {
	st := &s.m.Status
	return st.Workload != nil && st.Workload.Kind == "StatefulSet" && st.Plan.Strategy == v1alpha1.StrategyShadowPod &&
		s.isDone(v1alpha1.ConditionSourceStopped) && (!s.hasBroker() || s.isDone(v1alpha1.ConditionTopologyRestored)) &&
		!s.isDone(v1alpha1.ConditionOwnershipTransferred)
}

func (r *Reconciler) finishSwap(ctx context.Context, s *scope) (reconcile.Result, error) {
	if err := r.cleanupCheckpoint(ctx, s); err != nil {
		return reconcile.Result{}, err
	}
	msg, done, err := r.swapIdentity(ctx, s)
	return r.completeWhenOwned(s, msg, done, err)
}

// switchStream hands the primary queue to the target: seal the buffer, let
// the target drain it, tell it to switch, wait until it consumes the primary,
// then remove the replay topology.
func (r *Reconciler) switchStream(ctx context.Context, s *scope, target *corev1.Pod) (reconcile.Result, bool, error) {
	st := &s.m.Status
	h, err := s.brokerSession(ctx)
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
		return res, false, ferr
	}
	rec := s.brokerRecord()
	if rec.PrimaryLocked {
		// The source is dead: the queue is the target's alone now.
		if err := h.Unlock(ctx, rec); err != nil {
			res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
			return res, false, ferr
		}
	}
	if !s.isDone(v1alpha1.ConditionReplaySealed) {
		if err := h.Seal(ctx, rec); err != nil {
			res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
			return res, false, ferr
		}
		s.done(v1alpha1.ConditionReplaySealed, "replay queue unbound: new messages reach only "+s.m.Spec.MessageQueueConfig.QueueName)
	}
	if !s.isDone(v1alpha1.ConditionTargetSwitched) {
		p, err := h.Progress(ctx, rec)
		if err != nil {
			res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
			return res, false, ferr
		}
		updateMessages(st, p)
		// A workload without the SDK is told END_REPLAY once the buffer
		// is empty; one with it drains what is left itself (Draining)
		// before it takes the primary queue.
		if p.Buffer.Ready > 0 && !targetReporting(st) {
			return s.pollHandoff(), false, nil
		}
		if meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionTargetSwitched) == nil {
			baseline := int32(p.Primary.Consumers)
			rec.PrimaryConsumersAtSwitch = &baseline
			if direct(s) {
				s.condition(v1alpha1.ConditionTargetSwitched, metav1.ConditionFalse, "WaitingForTarget", "the source is gone; waiting for the target to consume "+s.m.Spec.MessageQueueConfig.QueueName)
				return s.pollHandoff(), false, nil
			}
			if err := h.EndReplay(ctx, rec.ControlQueue, rec); err != nil {
				res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
				return res, false, ferr
			}
			s.condition(v1alpha1.ConditionTargetSwitched, metav1.ConditionFalse, "EndReplaySent", "END_REPLAY sent; waiting for the target to consume "+s.m.Spec.MessageQueueConfig.QueueName)
			if !targetReporting(st) {
				return s.pollHandoff(), false, nil
			}
			// A reporting target answers REPLAY_DONE once it has drained
			// the sealed buffer and consumes the primary queue.
			if err := s.awaitReports(ctx, h); err != nil {
				res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
				return res, false, ferr
			}
			if !targetReportedSwitch(st) {
				return s.pollHandoff(), false, nil
			}
		}
		if err := s.readReports(ctx, h); err != nil {
			res, ferr := s.retryOrFail(err, v1alpha1.ReasonCutoverFailed)
			return res, false, ferr
		}
		// A target that reports says when it has switched; one that does
		// not is seen on the primary queue.
		if direct(s) {
			// The source is dead and the lock let go: whoever consumes
			// the queue now is the target (the exact count, at once).
			if p.Primary.Consumers == 0 {
				return s.pollHandoff(), false, nil
			}
			s.switchedWithoutReport()
		} else if !targetReportedSwitch(st) {
			// A target without the SDK is seen through the management
			// API, whose statistics do not change faster than Poll.
			wait := s.poll()
			if targetReporting(st) {
				wait = s.pollHandoff()
			}
			if !consumesPrimary(p.Primary, rec.PrimaryConsumersAtSwitch, target.Status.PodIP) || !s.switchedWithoutReport() {
				return wait, false, nil
			}
			// Consuming the primary queue is not enough: a target that
			// went there on its own after the restore, and polls its
			// control queue, takes START_REPLAY after that and follows it
			// to the replay queue. It has switched once it took END_REPLAY.
			if taken, err := r.tookEndReplay(ctx, s, h); err != nil || !taken {
				return wait, false, err
			}
		}
		s.done(v1alpha1.ConditionTargetSwitched, "target "+target.Name+" consumes "+s.m.Spec.MessageQueueConfig.QueueName)
		// The sealed buffer is empty and the target has left it for the
		// primary queue: it has taken all of it.
		if msgs := st.Messages; msgs != nil {
			msgs.Replayed, msgs.Remaining = max(msgs.Replayed, msgs.Buffered), 0
		}
		// stamped when seen, not when the reconcile began: one reconcile
		// may release the source and switch the stream
		now := s.r.Clock.Now()
		switched := metav1.NewMicroTime(now)
		dt := downtime(st)
		dt.TargetSwitchedTime = &switched
		if dt.SourceStoppedTime != nil {
			dt.HandoffGap = &metav1.Duration{Duration: now.Sub(dt.SourceStoppedTime.Time)}
		}
	}
	if !s.isDone(v1alpha1.ConditionTopologyRestored) {
		if err := h.Teardown(ctx, rec); err != nil {
			return reconcile.Result{}, false, err
		}
		// The source's control queue goes with the source; a Sequential
		// target took over the name, and the queue with it.
		if s.m.Spec.SourcePod != target.Name {
			s.deleteControlQueues(ctx, h, s.m.Spec.SourcePod)
		}
		s.done(v1alpha1.ConditionTopologyRestored, "replay queue removed; bindings as before the migration")
	}
	return reconcile.Result{}, true, nil
}

// consumesPrimary: the target consumes the primary queue. The exact
// consumer count (one more than when END_REPLAY went out) answers at once
// for an SDK target; the management API's consumer addresses, which lag by
// its statistics interval, answer for a workload that took the primary
// queue before END_REPLAY (one written for MS2M does on reconnecting).
func consumesPrimary(primary broker.QueueStats, atSwitch *int32, podIP string) bool {
	if atSwitch != nil && primary.Consumers > int(*atSwitch) {
		return true
	}
	if primary.ConsumerPeers != nil && podIP != "" {
		return slices.Contains(primary.ConsumerPeers, podIP)
	}
	return atSwitch == nil && primary.Consumers > 0
}

// liveTarget fetches the target pod and fails the migration if it is gone
// or broken.
func (r *Reconciler) liveTarget(ctx context.Context, s *scope) (*corev1.Pod, reconcile.Result, bool) {
	target, err := r.targetPod(ctx, s.m)
	if err != nil {
		return nil, reconcile.Result{}, true
	}
	if target == nil || !target.DeletionTimestamp.IsZero() {
		res, _ := s.fail(v1alpha1.ReasonTargetLost, "target pod %q disappeared", s.m.Status.TargetPod)
		return nil, res, true
	}
	if msg := restoreFailure(target, s.m.Status.ContainerName); msg != "" {
		res, _ := s.fail(v1alpha1.ReasonTargetLost, "target pod %s: %s", target.Name, msg)
		return nil, res, true
	}
	return target, reconcile.Result{}, false
}

// checkTarget is liveTarget for handlers that do not need the pod.
func (r *Reconciler) checkTarget(ctx context.Context, s *scope) (reconcile.Result, bool) {
	_, res, lost := r.liveTarget(ctx, s)
	return res, lost
}

func (r *Reconciler) complete(s *scope) {
	st := &s.m.Status
	s.enter(v1alpha1.PhaseCompleted)
	s.condition(v1alpha1.ConditionProgressing, metav1.ConditionFalse, v1alpha1.ReasonCompleted, "migration completed")
	s.condition(v1alpha1.ConditionSucceeded, metav1.ConditionTrue, v1alpha1.ReasonCompleted,
		fmt.Sprintf("%s runs on %s as %s", s.m.Spec.SourcePod, st.TargetNode, st.TargetPod))
	s.event(corev1.EventTypeNormal, v1alpha1.ReasonCompleted, "Complete", "migrated %s from %s to %s as %s in %s",
		s.m.Spec.SourcePod, st.SourceNode, st.TargetNode, st.TargetPod, st.TotalDuration.Duration)
	observeCompletion(s.m)
}

func downtime(st *v1alpha1.StatefulMigrationStatus) *v1alpha1.DowntimeStatus {
	if st.Downtime == nil {
		st.Downtime = &v1alpha1.DowntimeStatus{}
	}
	return st.Downtime
}

// transferOwnership leaves the target with the source's owner.
func (r *Reconciler) transferOwnership(ctx context.Context, s *scope, target *corev1.Pod) (string, bool, error) {
	wl := s.m.Status.Workload
	if isSwap(s.m) {
		// The shadow has let go of the stream: the StatefulSet takes the
		// swap's target, which carries its pod's name, in place of the
		// swap's hold on it.
		set, replicas := swapOwner(s.m)
		done, err := r.handBackToStatefulSet(ctx, s.m.Namespace, set, replicas, target)
		return fmt.Sprintf("StatefulSet %s owns %s again, scaled back to %d", set, target.Name, replicas), done, err
	}
	switch wl.Kind {
	case "StatefulSet":
		done, err := r.handBackToStatefulSet(ctx, s.m.Namespace, wl.Name, ptrOr(wl.Replicas), target)
		return fmt.Sprintf("StatefulSet %s owns %s again, scaled back to %d", wl.Name, target.Name, ptrOr(wl.Replicas)), done, err
	case "Deployment", "ReplicaSet":
		owner := metav1.GetControllerOf(target)
		if owner == nil || owner.Kind != "ReplicaSet" {
			return "", false, fmt.Errorf("target %s was not adopted by a ReplicaSet", target.Name)
		}
		return fmt.Sprintf("ReplicaSet %s of %s %s owns %s in place of the source", owner.Name, wl.Kind, wl.Name, target.Name), true, nil
	}
	return "target pod " + target.Name + " is a pod without a controller, like its source", true, nil
}

// failure is an error that fails the migration instead of being retried.
type failure struct{ reason, msg string }

func (f *failure) Error() string { return f.reason + ": " + f.msg }

// pagesLost fails a PostCopy migration whose page stream broke while its
// target restores or replays: a target faulting on a page that never comes
// would otherwise wait out the phase's timeout, and a ShadowPod migration
// rolls back to its source at once. An agent that does not answer is
// asked again at the next look (checkTarget and the timeouts bound it).
func (r *Reconciler) pagesLost(ctx context.Context, s *scope) (reconcile.Result, bool, error) {
	st := &s.m.Status
	if st.Plan.MemoryTechnique != v1alpha1.MemoryPostCopy || st.Checkpoint == nil || s.isDone(v1alpha1.ConditionMemoryTransferred) {
		return reconcile.Result{}, false, nil
	}
	p, err := r.Agents.Pages(ctx, st.TargetNode, st.Checkpoint.ID)
	if err != nil || p.State != agentapi.OpFailed {
		return reconcile.Result{}, false, nil
	}
	notePageBytes(st, p.Bytes)
	res, err := failPagesLost(s, p)
	return res, true, err
}

// notePageBytes records the memory that moved apart from the checkpoint
// (status.transfer.pageBytes).
func notePageBytes(st *v1alpha1.StatefulMigrationStatus, n int64) {
	if st.Transfer == nil {
		st.Transfer = &v1alpha1.TransferStatus{}
	}
	st.Transfer.PageBytes = n
}

// failPagesLost: a ShadowPod migration rolls back to its source, which
// served on; a Sequential one has let its source go.
func failPagesLost(s *scope, p agentapi.PagesStatus) (reconcile.Result, error) {
	st := &s.m.Status
	return s.fail(v1alpha1.ReasonPagesLost, "the page stream from %s broke after %d bytes; the target %s cannot have its whole memory: %s",
		st.SourceNode, p.Bytes, st.TargetPod, p.Message)
}
