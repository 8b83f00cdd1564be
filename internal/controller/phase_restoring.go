package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/render"
)

// reconcileRestoring creates the target pod from the checkpoint image and
// waits until its restored container runs: by the word of ms2m's runtime
// handler where it restored it, else once the kubelet reports its
// containers ready. Sequential first stops the source, whose name the
// target takes.
func (r *Reconciler) reconcileRestoring(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	target, err := r.targetPod(ctx, s.m)
	if err != nil {
		return reconcile.Result{}, err
	}
	if target == nil {
		return r.createTarget(ctx, s)
	}
	if target.Labels[render.LabelMigration] != s.m.Name {
		return s.fail(v1alpha1.ReasonRestoreFailed, "pod %q already exists and was not created by this migration", target.Name)
	}
	if msg := restoreFailure(target, st.ContainerName); msg != "" {
		return s.fail(v1alpha1.ReasonRestoreFailed, "target pod %s on %s: %s", target.Name, st.TargetNode, msg)
	}
	if wl := st.Workload; wl != nil && wl.Kind == "StatefulSet" && st.Plan.Strategy == v1alpha1.StrategySequential && !s.isDone(v1alpha1.ConditionOwnershipTransferred) {
		// A Sequential target is handed back as soon as it exists (its
		// source is gone): the cutover gate, not the labels, keeps it out
		// of its Services until it has caught up, so it joins them the
		// moment the gate opens.
		done, err := r.handBackToStatefulSet(ctx, s.m.Namespace, wl.Name, ptrOr(wl.Replicas), target)
		msg := fmt.Sprintf("StatefulSet %s owns %s again, scaled back to %d", wl.Name, target.Name, ptrOr(wl.Replicas))
		if owned, res, err := recordOwnership(s, msg, done, err); !owned {
			return res, err
		}
	}
	if res, lost, err := r.pagesLost(ctx, s); lost {
		return res, err
	}
	how := "its containers are ready"
	if !render.ContainersReady(target) {
		run, recorded := r.restoredOnNode(ctx, s)
		if !run.Running {
			if recorded {
				return s.pollOp(), nil
			}
			return s.poll(), nil
		}
		how = fmt.Sprintf("ms2m's runtime handler started the restored container at %s; the kubelet reports it at its next look", run.Since.UTC().Format(time.RFC3339Nano))
	}
	s.done(v1alpha1.ConditionTargetRestored, fmt.Sprintf("pod %s restored on %s: %s", target.Name, target.Spec.NodeName, how))
	s.event(corev1.EventTypeNormal, v1alpha1.ConditionTargetRestored, "Restore", "target pod %s restored on %s", target.Name, target.Spec.NodeName)
	s.enter(v1alpha1.PhaseReplaying)
	return next(), nil
}

// restoredOnNode asks the target node's agent whether the container
// restored through ms2m's runtime handler runs: the handler records it as
// the runtime starts it, while the kubelet notices only at its next look
// at the runtime (PLEG's relist, up to a second), and a restored process
// has no reason to wait for that before it replays. recorded is false
// when only the kubelet can tell (another restore path, an agent that
// keeps no record, an agent not answering).
func (r *Reconciler) restoredOnNode(ctx context.Context, s *scope) (run agentapi.RestoredStatus, recorded bool) {
	st := &s.m.Status
	if st.Plan.RestorePath != v1alpha1.RestoreRuntimeHandler || st.Checkpoint == nil || st.Checkpoint.ID == "" {
		return run, false
	}
	run, err := r.Agents.Restored(ctx, st.TargetNode, st.Checkpoint.ID)
	if err != nil {
		if !errors.Is(err, agentapi.ErrNotRecorded) {
			log.FromContext(ctx).Info("target's agent cannot say whether the restored container runs; waiting for the kubelet", "node", st.TargetNode, "error", err.Error())
		}
		return agentapi.RestoredStatus{}, false
	}
	return run, true
}

func (r *Reconciler) createTarget(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	sequential := st.Plan.Strategy == v1alpha1.StrategySequential
	var pod *corev1.Pod
	if sequential {
		// The target takes the source's name, so the source must go first;
		// its rendered replacement is kept in the cluster meanwhile, so a
		// restarted controller can still create it.
		tmpl, err := r.savedTarget(ctx, s)
		if err != nil || tmpl == nil {
			return reconcile.Result{}, err
		}
		statefulSet := st.Workload != nil && st.Workload.Kind == "StatefulSet"
		if src, err := r.sourcePod(ctx, s.m); err == nil && src.Labels[render.LabelMigration] != s.m.Name {
			s.markSourceStopping(src)
			// A source that is not held is deleted before the scale-down,
			// with the short grace: the scale-down would have the
			// StatefulSet delete it with its own grace period, and a
			// kubelet does not shorten a termination already under way (a
			// pod ignoring SIGTERM ran 30 s on).
			// What needs the broker is done before the deletion, so a
			// broker outage holds the source frozen and whole, not deleted
			// with its consumers uncounted. Neither containerd nor runc
			// thaws a paused container for SIGTERM (runc thaws only after
			// SIGKILL, which ends it first), so a deleted held source
			// never runs again; its agent ends it at once only to spare
			// the grace period.
			if st.Plan.HoldSource && s.hasBroker() {
				h, err := s.brokerSession(ctx)
				if err == nil {
					err = s.noteConsumersAtStop(ctx, h)
				}
				if err != nil {
					return s.pollHandoff(), err
				}
			}
			if statefulSet && st.Plan.HoldSource {
				// A held source is scaled away before its deletion. Deleted
				// first, it could be gone (its kubelet ends it after the
				// short grace) before the scale-down below, which waits on
				// its agent and the broker: its StatefulSet would recreate
				// it as a fresh process, which would apply and acknowledge
				// messages of the queue with none of the state, lost to the
				// target. The StatefulSet's own deletion of it, with the
				// pod's grace period, costs nothing: its agent kills it.
				if err := r.scaleStatefulSet(ctx, s.m.Namespace, st.Workload.Name, ptrOr(st.Workload.Replicas)-1); err != nil {
					return reconcile.Result{}, err
				}
			}
			if statefulSet || st.Plan.HoldSource {
				if err := r.deleteSource(ctx, src); err != nil {
					return reconcile.Result{}, err
				}
			}
			ended, err := r.endHeldSource(ctx, s, src)
			if err != nil || !ended.settled() {
				return s.pollHandoff(), err
			}
			if ended == heldEnded {
				// A StatefulSet's held source was scaled away above, so
				// its StatefulSet does not recreate the pod removed here.
				if err := r.forceDeleteEnded(ctx, src); err != nil {
					return reconcile.Result{}, err
				}
			}
		}
		if statefulSet {
			// One replica fewer: the StatefulSet does not recreate the
			// source while the target takes its name.
			if err := r.scaleStatefulSet(ctx, s.m.Namespace, st.Workload.Name, ptrOr(st.Workload.Replicas)-1); err != nil {
				return reconcile.Result{}, err
			}
		}
		gone, err := r.stopSource(ctx, s, nil, true)
		if err != nil || !gone {
			return s.poll(), err
		}
		pod = tmpl
	} else {
		src, err := r.sourcePod(ctx, s.m)
		if apierrors.IsNotFound(err) {
			return s.fail(v1alpha1.ReasonSourceLost, "source pod %q disappeared before the target was created", s.m.Spec.SourcePod)
		}
		if err != nil {
			return reconcile.Result{}, err
		}
		pod = r.renderTarget(s, src)
		if isSwap(s.m) {
			if err := r.prepareSwapTarget(ctx, s.m, pod); err != nil {
				return reconcile.Result{}, err
			}
		}
	}
	if err := r.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return s.fail(v1alpha1.ReasonRestoreFailed, "creating target pod %s: %v", pod.Name, err)
		}
		return reconcile.Result{}, err
	}
	s.event(corev1.EventTypeNormal, "TargetCreated", "Restore", "created target pod %s on %s from %s", pod.Name, st.TargetNode, st.Checkpoint.Image)
	return s.poll(), nil
}

func (r *Reconciler) renderTarget(s *scope, src *corev1.Pod) *corev1.Pod {
	st := &s.m.Status
	t := render.TargetPod{Source: src, Name: st.TargetPod, Node: st.TargetNode,
		Container: st.ContainerName, Others: st.Plan.CheckpointedContainers, Migration: s.m.Name, KeepIdentity: st.Plan.Strategy == v1alpha1.StrategySequential}
	if st.Checkpoint != nil {
		// A warm target is rendered before the checkpoint exists.
		t.Image = st.Checkpoint.Image
	}
	if st.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler {
		// The checkpoint's ID is the migration's: a warm target names it
		// before the checkpoint exists.
		t.RuntimeClass, t.CheckpointID = r.Options.RuntimeClass, s.id
	}
	return t.Build()
}

// targetPod is the migration's target pod, nil if it does not exist.
func (r *Reconciler) targetPod(ctx context.Context, m *v1alpha1.StatefulMigration) (*corev1.Pod, error) {
	if m.Status.TargetPod == "" {
		return nil, nil
	}
	p := &corev1.Pod{}
	err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, p)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if m.Status.Plan.Strategy == v1alpha1.StrategySequential && p.Labels[render.LabelMigration] != m.Name {
		return nil, nil // still the source, which carries the same name
	}
	return p, nil
}

// restoreFailure explains why the target pod will not come up, or "": the
// container's own state first (it says why: the runtime handler's refusal,
// a pull error), then the pod's phase.
func restoreFailure(p *corev1.Pod, container string) string {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != container {
			continue
		}
		if t := cs.State.Terminated; t != nil {
			return fmt.Sprintf("restored container exited (%s, code %d): %s", t.Reason, t.ExitCode, t.Message)
		}
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
				"CreateContainerConfigError", "RunContainerError", "CrashLoopBackOff", "ErrImageNeverPull":
				return fmt.Sprintf("%s: %s", w.Reason, w.Message)
			}
		}
	}
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return fmt.Sprintf("pod is %s: %s", p.Status.Phase, p.Status.Message)
	}
	return ""
}
