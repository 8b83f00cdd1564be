package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/render"
)

// stopSource deletes the source pod and reports whether it has stopped
// taking messages. That is as soon as its consumer has left the primary
// queue (the exact consumer count drops below what it was when the
// deletion was issued). Without a broker, or when the target takes the
// source's name (needGone), the pod itself must be gone. Nothing of what
// the source does from here on is needed (ShadowPod: its successor is
// Ready and in its Services; Sequential: the checkpoint is taken and the
// replay queue holds the rest), so it gets Options.SourceStopGrace, not
// its own termination grace period: a workload that ignores SIGTERM (a PID
// 1 without a handler) would otherwise hold the handoff for all of it. It
// is deleted before its owner would delete it with its own grace (a
// kubelet does not shorten a termination under way; a longer deletion
// found under way is asked to shorten all the same). The delete carries
// the source's UID, so a pod that has since taken its name is never hit.
// A ReplicaSet's target is handed over right after (see
// handOverToReplicaSet).
func (r *Reconciler) stopSource(ctx context.Context, s *scope, target *corev1.Pod, needGone bool) (bool, error) {
	if s.isDone(v1alpha1.ConditionSourceStopped) {
		return true, nil
	}
	pod, err := r.sourcePod(ctx, s.m)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && pod.Labels[render.LabelMigration] == s.m.Name):
		s.markSourceStopped("source pod " + s.m.Spec.SourcePod + " is gone")
		return true, nil
	case err != nil:
		return false, err
	}
	rec := s.brokerRecord()
	s.markSourceStopping(pod)
	if pod.DeletionTimestamp.IsZero() {
		if s.hasBroker() {
			h, err := s.brokerSession(ctx)
			if err != nil {
				return false, err
			}
			if err := s.noteConsumersAtStop(ctx, h); err != nil {
				return false, err
			}
		}
		if wl := s.m.Status.Workload; wl != nil && wl.Kind == "StatefulSet" && !needGone {
			// A ShadowPod source of a StatefulSet: one replica fewer, so the
			// StatefulSet does not bring the source back; the identity swap
			// scales it back with the target in the pod's name.
			if err := r.scaleStatefulSet(ctx, s.m.Namespace, wl.Name, ptrOr(wl.Replicas)-1); err != nil {
				return false, err
			}
		}
		// Deleted before the ReplicaSet takes the target, with the short
		// grace: a ReplicaSet one pod over deletes the surplus with its
		// own grace period, and a kubelet does not shorten a termination
		// already under way. A terminating source no longer counts as the
		// ReplicaSet's replica, and the target does at once.
		if err := r.deleteSource(ctx, pod); err != nil {
			return false, err
		}
		if target != nil {
			if err := r.handOverToReplicaSet(ctx, pod, target); err != nil {
				return false, fmt.Errorf("handing %s over to its ReplicaSet: %w", target.Name, err)
			}
		}
	} else if err := r.deleteSource(ctx, pod); err != nil {
		return false, err
	}
	if gone, err := r.sourceGoneWithItsNode(ctx, s, pod); err != nil || gone {
		return gone, err
	}
	if quiesces(&s.m.Status) && !pod.DeletionTimestamp.IsZero() {
		return r.endQuiescedSource(ctx, s, pod)
	}
	if needGone || !s.hasBroker() || rec.PrimaryConsumersAtStop == nil || pod.DeletionTimestamp.IsZero() {
		return false, nil
	}
	h, err := s.brokerSession(ctx)
	if err != nil {
		return false, err
	}
	p, err := h.Progress(ctx, rec)
	if err != nil {
		return false, err
	}
	if p.Primary.Consumers < int(*rec.PrimaryConsumersAtStop) {
		s.markSourceStopped(fmt.Sprintf("source pod %s is terminating and its consumer has left %s", pod.Name, s.m.Spec.MessageQueueConfig.QueueName))
		return true, nil
	}
	return false, nil
}

// sourceGoneWithItsNode ends the wait for a terminating source whose node
// has been lost for Options.NodeLostGrace and whose consumer the broker no
// longer lists: no kubelet will confirm its deletion, and the consumer
// count may never drop below its baseline (taken after the dead node's
// connection had dropped). A source the broker still lists (a node cut off
// from the API server, not a dead one) is waited for: it may still consume.
func (r *Reconciler) sourceGoneWithItsNode(ctx context.Context, s *scope, pod *corev1.Pod) (bool, error) {
	if pod.DeletionTimestamp.IsZero() {
		return false, nil
	}
	lost, why, err := r.nodeLost(ctx, pod.Spec.NodeName, s.now)
	if err != nil || !lost {
		return false, err
	}
	if s.hasBroker() {
		h, err := s.brokerSession(ctx)
		if err != nil {
			return false, err
		}
		p, err := h.Progress(ctx, s.brokerRecord())
		if err != nil {
			return false, err
		}
		if p.Primary.ConsumerPeers == nil || pod.Status.PodIP != "" && slices.Contains(p.Primary.ConsumerPeers, pod.Status.PodIP) {
			return false, nil
		}
	}
	if err := r.forceDeleteEnded(ctx, pod); err != nil {
		return false, err
	}
	s.event(corev1.EventTypeWarning, "SourceForceDeleted", "StopSource", "source pod %s force-deleted: its node %s %s, and the broker lists no consumer of it", pod.Name, pod.Spec.NodeName, why)
	s.markSourceStopped(fmt.Sprintf("source pod %s went with its node %s", pod.Name, pod.Spec.NodeName))
	return true, nil
}

// endpointsPatience bounds the wait for a terminating source to leave its
// Services' endpoints (an EndpointSlice controller that is down must not
// hold a migration).
const endpointsPatience = 2 * time.Second

// sourceDrain is the least time a thawed ShadowPod source serves after its
// deletion began (and its endpoints began to go), before it is ended:
// clients that read endpoints from a watch or a proxy's sync learn late
// (an ended source answered one probe with EOF in the lab when ended as
// soon as the EndpointSlice dropped it).
const sourceDrain = 500 * time.Millisecond

// endQuiescedSource ends a ShadowPod source the Handoff thawed, once it is
// terminating (out of its Services' endpoints): its agent kills it, since
// it holds nothing of the queue and the queue may be let go only once it
// can never consume again. Where its agent cannot, the pod must be gone.
func (r *Reconciler) endQuiescedSource(ctx context.Context, s *scope, pod *corev1.Pod) (bool, error) {
	st := &s.m.Status
	// Make before break: its clients are sent elsewhere before it ends,
	// and those who learn of its endpoints late (a proxy's next sync) get
	// sourceDrain more.
	_, serving, err := r.endpointsOf(ctx, pod)
	if err != nil {
		return false, err
	}
	stopping := s.now.Sub(migration.ConditionTime(st, v1alpha1.ConditionSourceStopped))
	if (len(serving) > 0 && stopping < endpointsPatience) || stopping < sourceDrain {
		return false, nil
	}
	err = r.Agents.EndHeld(ctx, st.SourceNode, st.Checkpoint.ID)
	if errors.Is(err, agentapi.ErrNothingHeld) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ending source %s on %s: %w", pod.Name, st.SourceNode, err)
	}
	s.markSourceStopped(fmt.Sprintf("source pod %s is terminating and its agent has ended it; it took nothing from %s since its checkpoint",
		pod.Name, s.m.Spec.MessageQueueConfig.QueueName))
	return true, nil
}

// deleteSource deletes the source with the controller's short grace,
// unless a deletion with no longer a grace is under way.
func (r *Reconciler) deleteSource(ctx context.Context, pod *corev1.Pod) error {
	grace := int64(r.Options.SourceStopGrace / time.Second)
	if g := pod.DeletionGracePeriodSeconds; !pod.DeletionTimestamp.IsZero() && g != nil && *g <= grace {
		return nil
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil && *g < grace {
		// never 0: that removes the pod object at once, before its
		// containers have stopped
		grace = max(*g, 1)
	}
	uid := pod.UID
	err := r.Delete(ctx, pod, client.Preconditions{UID: &uid}, client.GracePeriodSeconds(grace))
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	return nil
}

// markSourceStopping records the point of no return before the source's
// stop is issued (or, after a crash between the two, once it is seen
// terminating): from here the migration only rolls forward.
func (s *scope) markSourceStopping(pod *corev1.Pod) {
	if c := meta.FindStatusCondition(s.m.Status.Conditions, v1alpha1.ConditionSourceStopped); c != nil {
		return
	}
	s.condition(v1alpha1.ConditionSourceStopped, metav1.ConditionFalse, v1alpha1.ReasonSourceStopping,
		"stopping source pod "+pod.Name+": past the point of no return, the migration rolls forward")
}

func (s *scope) markSourceStopped(msg string) {
	s.done(v1alpha1.ConditionSourceStopped, msg)
	stopped := metav1.NewMicroTime(s.r.Clock.Now())
	downtime(&s.m.Status).SourceStoppedTime = &stopped
	s.event(corev1.EventTypeNormal, v1alpha1.ConditionSourceStopped, "StopSource", "%s (on %s)", msg, s.m.Status.SourceNode)
}

// heldState is where ending a held source stands.
type heldState int

const (
	// heldNone: nothing to end (the source was not held, or its agent
	// cannot end it): it is stopped by deleting its pod.
	heldNone heldState = iota
	// heldWaiting: killed; the broker has not yet let go of its consumer.
	heldWaiting
	// heldEnded: killed, and its consumer is gone from the primary queue.
	heldEnded
)

// heldConsumerPatience bounds the wait for a killed source's consumer to
// leave the primary queue.
const heldConsumerPatience = 10 * time.Second

func (h heldState) settled() bool { return h != heldWaiting }

// endHeldSource ends a Sequential source that its dump left frozen: its
// agent kills it where it stands, so it never applies another message,
// and the broker takes back in order what it held unacknowledged when its
// connection drops. A frozen process cannot answer SIGTERM, so deleting
// its pod would cost the whole grace period and then the kubelet's next
// relist before the target could take its name: measured 3.3 s in the lab,
// most of Restoring.
func (r *Reconciler) endHeldSource(ctx context.Context, s *scope, src *corev1.Pod) (heldState, error) {
	st := &s.m.Status
	if !st.Plan.HoldSource || st.Checkpoint == nil {
		return heldNone, nil
	}
	rec := s.brokerRecord()
	var h broker.Handoff
	if s.hasBroker() {
		var err error
		if h, err = s.brokerSession(ctx); err != nil {
			return heldNone, err
		}
		if err := s.noteConsumersAtStop(ctx, h); err != nil {
			return heldNone, err
		}
	}
	if postCopyHoldsSource(st) {
		return r.releasePostCopySource(ctx, s, h, src)
	}
	err := r.Agents.EndHeld(ctx, st.SourceNode, st.Checkpoint.ID)
	if errors.Is(err, agentapi.ErrNothingHeld) {
		if src.DeletionTimestamp.IsZero() {
			s.event(corev1.EventTypeWarning, "HeldSourceNotEnded", "StopSource",
				"the agent on %s did not end the source it holds (%v); deleting pod %s instead, which waits for its grace period", st.SourceNode, err, src.Name)
		}
		return heldNone, nil
	}
	if err != nil {
		return heldNone, fmt.Errorf("ending held source %s on %s: %w", src.Name, st.SourceNode, err)
	}
	if h == nil {
		return heldEnded, nil
	}
	p, err := h.Progress(ctx, rec)
	if err != nil {
		return heldNone, err
	}
	if p.Primary.Consumers == 0 || p.Primary.Consumers < int(*rec.PrimaryConsumersAtStop) {
		return heldEnded, nil
	}
	// Its connection may have dropped before the count was taken (a
	// long freeze outlives the broker's heartbeat): it cannot be told
	// from another consumer then, and it is dead either way.
	if s.now.Sub(migration.ConditionTime(st, v1alpha1.ConditionSourceStopped)) > heldConsumerPatience {
		return heldEnded, nil
	}
	return heldWaiting, nil
}

// releasePostCopySource lets the stream go from a PostCopy source without
// ending it: CRIU holds it (traced) while it serves its pages, and a
// process killed then cannot finish dying until CRIU lets go of it, which
// is after the target has run and taken the pages; its runtime would wait
// for it, and the target, which takes its name, for its pod. So its
// consumer's connection is closed through the broker's management API,
// which returns, in order, what it held unacknowledged; its pod goes at
// once; and its agent ends it once the last page has gone (endPostCopySource).
func (r *Reconciler) releasePostCopySource(ctx context.Context, s *scope, h broker.Handoff, src *corev1.Pod) (heldState, error) {
	if h == nil {
		return heldEnded, nil
	}
	done, why, err := h.Disconnect(ctx, s.brokerRecord(), podAddresses(src))
	if err != nil {
		return heldNone, fmt.Errorf("disconnecting held source %s from the broker: %w", src.Name, err)
	}
	if !done {
		s.condition(v1alpha1.ConditionSourceStopped, metav1.ConditionFalse, v1alpha1.ReasonSourceStopping, why)
		return heldWaiting, nil
	}
	return heldEnded, nil
}

// postCopyHoldsSource: a PostCopy migration whose source (Sequential) is
// held by CRIU's lazy dump, serving its pages, rather than dumped whole
// and serving on (ShadowPod) while its dump serves them.
func postCopyHoldsSource(st *v1alpha1.StatefulMigrationStatus) bool {
	return st.Plan.MemoryTechnique == v1alpha1.MemoryPostCopy && st.Plan.Strategy == v1alpha1.StrategySequential
}

// endPostCopySource ends a PostCopy source once every page has reached the
// target (CRIU has let go of it): still frozen, it never runs again.
func (r *Reconciler) endPostCopySource(ctx context.Context, s *scope) {
	st := &s.m.Status
	err := r.Agents.EndHeld(ctx, st.SourceNode, st.Checkpoint.ID)
	if err != nil && !errors.Is(err, agentapi.ErrNothingHeld) {
		s.event(corev1.EventTypeWarning, "HeldSourceNotEnded", "StopSource",
			"the agent on %s did not end the source it held for post-copy (%v); its runtime ends it with its pod", st.SourceNode, err)
	}
}

// forceDeleteEnded removes the pod of a source whose container its agent
// has killed, at once: nothing of it runs any more, so the kubelet's
// cleanup may follow in the background while the target takes its name.
// The delete carries the source's UID, so a pod that has taken its name
// since is never hit.
func (r *Reconciler) forceDeleteEnded(ctx context.Context, pod *corev1.Pod) error {
	uid := pod.UID
	err := r.Delete(ctx, pod, client.Preconditions{UID: &uid}, client.GracePeriodSeconds(0))
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	return nil
}

// noteConsumersAtStop records, once, how many consumers the primary queue
// has before the source is stopped: one fewer says its consumer is gone.
func (s *scope) noteConsumersAtStop(ctx context.Context, h broker.Handoff) error {
	rec := s.brokerRecord()
	if rec.PrimaryConsumersAtStop != nil {
		return nil
	}
	p, err := h.Progress(ctx, rec)
	if err != nil {
		return err
	}
	n := int32(p.Primary.Consumers)
	rec.PrimaryConsumersAtStop = &n
	return nil
}
