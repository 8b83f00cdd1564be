package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/render"
)

// The target joins its Services when the controller opens its cutover
// gate. The kubelet folds an opened readiness gate into Ready only at its
// next sync of the pod, and that sync waits for the next relist of the
// container runtime (the generic PLEG relists once a second): 1.0–1.7 s
// measured in the lab, most of a cutover. The controller knows what the
// kubelet will compute (the gate it opened itself, the containers'
// readiness the kubelet reported, the other gates), so it sets Ready in the
// same patch, and the EndpointSlice controller puts the target into its
// Services' endpoints at once: where no source serves (Sequential), that
// is the end of the outage. A ShadowPod source still goes only once the
// kubelet has confirmed (below): its stale write-back would otherwise
// leave the Service without a ready endpoint until the guard's next poll.
//
// The kubelet confirms Ready at that next sync. The marker message makes
// sure it syncs: it reconciles a pod whose Ready message differs from the
// one it would compute (NeedToReconcilePodReadiness). Until it has synced,
// its status manager may still write back the Ready=False it cached before
// the gate opened (its periodic reconcile, every 10 s); holdReady writes
// Ready again as soon as that is seen, as the kubelet itself would a second
// later.
const (
	cutoverReadyReason  = "MigrationCutover"
	cutoverReadyMessage = "set by ms2m when it opened the cutover gate; the kubelet confirms it at its next sync of the pod"
)

// endpointPatience bounds how long the cutover waits to see the target in
// its Services' endpoints before it goes on without (and says so): an
// EndpointSlice controller that is down must not hold a migration.
const endpointPatience = 10 * time.Second

// kubeletConfirmPatience bounds how long a serving source waits for the
// target's kubelet to confirm its Ready before it is stopped anyway (the
// guard then holds the target's Ready).
const kubeletConfirmPatience = 5 * time.Second

// readyConfirmGuard is how long after completion the controller still
// holds a target's Ready against a stale write-back, if the kubelet has
// not confirmed it by then.
const readyConfirmGuard = 30 * time.Second

// bringIntoService opens the target's cutover gate (with Ready), then
// waits until every Service that selects the target lists it as a ready
// endpoint: from then on clients reach it, and the source may go.
// serving is false while the phase must wait; res then says when to look
// again.
func (r *Reconciler) bringIntoService(ctx context.Context, s *scope, target *corev1.Pod) (res reconcile.Result, serving bool, err error) {
	if s.isDone(v1alpha1.ConditionTargetServing) {
		_, err := holdReady(ctx, r.Client, target)
		return reconcile.Result{}, err == nil, err
	}
	if wrote, err := r.openForService(ctx, s, target); err != nil || wrote {
		return s.pollHandoff(), false, err
	}
	if !podReady(target) {
		// Its containers are not ready (or another readiness gate is
		// closed): the kubelet decides.
		return s.poll(), false, nil
	}
	if !s.isDone(v1alpha1.ConditionSourceStopped) && !releases(s) && !readyConfirmed(target) &&
		s.now.Sub(migration.ConditionTime(&s.m.Status, v1alpha1.ConditionTargetServing)) < kubeletConfirmPatience {
		// A source still serves: it goes only once the kubelet has
		// confirmed the Ready set for the target. Before its own sync the
		// kubelet may write back the Ready=False it cached, which the
		// guard overwrites within a poll, but with the source gone that
		// poll is an outage (106 ms seen once in the lab). The kubelet's
		// write wakes the migration. A source that releases its queue
		// serves on after completion until the kubelet has confirmed
		// (release.go), so nothing here waits for it.
		return s.poll(), false, nil
	}
	missing, err := r.endpointsMissing(ctx, target)
	if err != nil {
		return reconcile.Result{}, false, err
	}
	msg := target.Name + " is Ready and a ready endpoint of every Service that selects it"
	if len(missing) > 0 {
		opened := migration.ConditionTime(&s.m.Status, v1alpha1.ConditionTargetServing)
		if s.now.Sub(opened) < endpointPatience {
			return s.pollHandoff(), false, nil
		}
		msg = fmt.Sprintf("%s is Ready but not seen in the endpoints of Service(s) %s after %s; going on",
			target.Name, strings.Join(missing, ", "), endpointPatience)
		s.event(corev1.EventTypeWarning, "EndpointsNotSeen", "Cutover", "%s", msg)
	}
	s.done(v1alpha1.ConditionTargetServing, msg)
	// A ShadowPod source has served until now, beside the target: no gap.
	// A Sequential source stopped before the target existed.
	// A released source serves HTTP after it let go of its queue.
	var unavailable time.Duration
	if t := downtime(&s.m.Status).SourceStoppedTime; t != nil && !releases(s) {
		unavailable = s.now.Sub(t.Time)
	}
	downtime(&s.m.Status).Unavailable = &metav1.Duration{Duration: unavailable}
	return reconcile.Result{}, true, nil
}

// openForService opens the target's cutover gate (with Ready) if it is
// not open yet, else holds its Ready against a stale kubelet write. It
// reports whether it wrote the pod.
func (r *Reconciler) openForService(ctx context.Context, s *scope, target *corev1.Pod) (bool, error) {
	if render.CutoverOpen(target) {
		return holdReady(ctx, r.Client, target)
	}
	if err := openCutoverGate(ctx, r.Client, target); err != nil {
		return false, err
	}
	s.condition(v1alpha1.ConditionTargetServing, metav1.ConditionFalse, "GateOpened",
		"cutover gate of "+target.Name+" opened: waiting to see it in its Services' endpoints")
	return true, nil
}

// openCutoverGate opens the target's cutover gate and, when nothing else
// holds the pod back (its containers ready, every other readiness gate
// open), sets Ready with it: the kubelet would compute the same.
func openCutoverGate(ctx context.Context, c client.Client, p *corev1.Pod) error {
	patch := client.StrategicMergeFrom(p.DeepCopy())
	now := metav1.Now()
	setPodCondition(p, corev1.PodCondition{Type: render.CutoverGate, Status: corev1.ConditionTrue,
		Reason: "CutOver", Message: "ms2m cut over to this pod", LastTransitionTime: now})
	if readyBesidesGate(p) {
		setPodCondition(p, cutoverReady(now))
	}
	return c.Status().Patch(ctx, p, patch)
}

// holdReady sets Ready again on a target whose gate is open and whose
// containers are ready but which a stale kubelet write has made not Ready.
// It reports whether it had to.
func holdReady(ctx context.Context, c client.Client, p *corev1.Pod) (bool, error) {
	if !render.CutoverOpen(p) || podReady(p) || !readyBesidesGate(p) {
		return false, nil
	}
	patch := client.StrategicMergeFrom(p.DeepCopy())
	setPodCondition(p, cutoverReady(metav1.Now()))
	return true, c.Status().Patch(ctx, p, patch)
}

func cutoverReady(now metav1.Time) corev1.PodCondition {
	return corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue,
		Reason: cutoverReadyReason, Message: cutoverReadyMessage, LastTransitionTime: now}
}

// readyConfirmed: the kubelet has written Ready itself since ms2m set it.
func readyConfirmed(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && c.Reason != cutoverReadyReason
		}
	}
	return false
}

// guardReady holds a completed migration's target Ready until its kubelet
// has confirmed it (or readyConfirmGuard has passed). The target's pod
// events wake the migration, a stale write included.
func (r *Reconciler) guardReady(ctx context.Context, s *scope) error {
	st := &s.m.Status
	if st.CompletionTime == nil || s.now.Sub(st.CompletionTime.Time) > readyConfirmGuard {
		return nil
	}
	target, err := r.targetPod(ctx, s.m)
	if err != nil || target == nil || !target.DeletionTimestamp.IsZero() || readyConfirmed(target) {
		return err
	}
	_, err = holdReady(ctx, r.Client, target)
	return err
}

// endpointsMissing names the Services that select p but do not list it
// as a ready endpoint yet. Read from the API server, not the manager's
// cache: the manager does not watch every Service and EndpointSlice of
// the cluster for a moment's question.
func (r *Reconciler) endpointsMissing(ctx context.Context, p *corev1.Pod) ([]string, error) {
	missing, _, err := r.endpointsOf(ctx, p)
	return missing, err
}

// endpointsOf sorts the Services that select p into those that do not
// list it as a ready endpoint and those that do.
func (r *Reconciler) endpointsOf(ctx context.Context, p *corev1.Pod) (missing, listed []string, _ error) {
	var services corev1.ServiceList
	if err := r.APIReader.List(ctx, &services, client.InNamespace(p.Namespace)); err != nil {
		return nil, nil, fmt.Errorf("listing the Services of %s: %w", p.Namespace, err)
	}
	for _, svc := range services.Items {
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Labels)) {
			continue
		}
		var slices discoveryv1.EndpointSliceList
		if err := r.APIReader.List(ctx, &slices, client.InNamespace(p.Namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
			return nil, nil, fmt.Errorf("listing the EndpointSlices of Service %s: %w", svc.Name, err)
		}
		if readyEndpoint(slices.Items, p.UID) {
			listed = append(listed, svc.Name)
		} else {
			missing = append(missing, svc.Name)
		}
	}
	return missing, listed, nil
}

// readyEndpoint: one of the slices lists the pod as ready (an unknown
// readiness counts as ready, as the EndpointSlice API says).
func readyEndpoint(slices []discoveryv1.EndpointSlice, uid types.UID) bool {
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.UID == uid &&
				(ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				return true
			}
		}
	}
	return false
}

func setPodCondition(p *corev1.Pod, cond corev1.PodCondition) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == cond.Type {
			if p.Status.Conditions[i].Status != cond.Status || p.Status.Conditions[i].Reason != cond.Reason {
				p.Status.Conditions[i] = cond
			}
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, cond)
}

// readyBesidesGate: the containers are ready and every readiness gate but
// the cutover gate is open, so the pod is Ready once the gate opens.
func readyBesidesGate(p *corev1.Pod) bool {
	if !render.ContainersReady(p) {
		return false
	}
	for _, g := range p.Spec.ReadinessGates {
		if g.ConditionType == render.CutoverGate {
			continue
		}
		open := false
		for _, c := range p.Status.Conditions {
			if c.Type == g.ConditionType {
				open = c.Status == corev1.ConditionTrue
			}
		}
		if !open {
			return false
		}
	}
	return true
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
