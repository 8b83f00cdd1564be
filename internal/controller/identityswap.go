package controller

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// A StatefulSet pod moved as a ShadowPod (identitySwapMode set) ends up
// serving as <pod>-shadow, outside its StatefulSet. The identity swap moves
// it once more, on the same node, into the StatefulSet's name: a second
// migration, child of the first, whose replay queue is the fence — bound
// before the shadow's checkpoint, it holds every message the shadow applies
// meanwhile, and the SDK skips what the checkpoint already had. The
// StatefulSet stays scaled down by one from the first cutover until the
// swap's target, carrying the pod's name, is handed back to it.
const (
	// AnnotationSwapFor marks an identity-swap migration with its parent.
	AnnotationSwapFor = "migration.ms2m.io/identity-swap-for"
	// AnnotationSwapPod is the StatefulSet pod name the swap restores into.
	AnnotationSwapPod = "migration.ms2m.io/identity-swap-pod"
	// AnnotationSwapSet and AnnotationSwapReplicas name the StatefulSet and
	// the replicas to scale it back to.
	AnnotationSwapSet      = "migration.ms2m.io/identity-swap-statefulset"
	AnnotationSwapReplicas = "migration.ms2m.io/identity-swap-replicas"
)

// isSwap reports whether m is an identity swap.
func isSwap(m *v1alpha1.StatefulMigration) bool { return m.Annotations[AnnotationSwapFor] != "" }

// swapName is the parent's name with "-swap", within the 63 characters a
// migration's name may have (it labels pods); a longer parent's is cut and
// told apart by its UID.
func swapName(parent *v1alpha1.StatefulMigration) string {
	if n := parent.Name + "-swap"; len(n) <= 63 {
		return n
	}
	return parent.Name[:50] + "-" + string(parent.UID)[:7] + "-swap"
}

// swapIdentity creates the parent's identity swap and reports whether it
// has completed; its failure fails the parent.
func (r *Reconciler) swapIdentity(ctx context.Context, s *scope) (string, bool, error) {
	p := s.m
	wl := p.Status.Workload
	shadow := p.Status.TargetPod
	child := &v1alpha1.StatefulMigration{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: swapName(p)}, child)
	started := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionIdentitySwapStarted) != nil
	switch {
	case err == nil && !metav1.IsControlledBy(child, p):
		return "", false, &failure{reason: v1alpha1.ReasonCutoverFailed, msg: fmt.Sprintf(
			"StatefulMigration %s exists and is not this migration's identity swap; %s keeps serving outside its StatefulSet", child.Name, shadow)}
	case apierrors.IsNotFound(err) && started:
		return "", false, &failure{reason: v1alpha1.ReasonCutoverFailed, msg: fmt.Sprintf(
			"identity swap %s was deleted before it completed; %s keeps serving outside its StatefulSet", swapName(p), shadow)}
	case apierrors.IsNotFound(err) && !p.DeletionTimestamp.IsZero():
		return "", false, &failure{reason: v1alpha1.ReasonDeleted, msg: fmt.Sprintf(
			"deleted before its identity swap; %s keeps serving outside its StatefulSet", shadow)}
	}
	if apierrors.IsNotFound(err) {
		// The swap's target takes the source's name: the source, which let
		// go of the stream already, must have finished shutting down.
		if _, err := r.sourcePod(ctx, p); !apierrors.IsNotFound(err) {
			return "", false, err
		}
		// The swap's replay ends as the migration's did: a Drain above the
		// consumer's capacity never ends, a Cutoff is bounded.
		replay := p.Status.Plan.ReplayMode
		if p.Spec.EffectiveIdentitySwapMode() == v1alpha1.IdentitySwapCutoff {
			replay = v1alpha1.ReplayCutoff
		}
		child = &v1alpha1.StatefulMigration{
			ObjectMeta: metav1.ObjectMeta{Name: swapName(p), Namespace: p.Namespace, Annotations: map[string]string{
				AnnotationSwapFor: p.Name, AnnotationSwapPod: p.Spec.SourcePod, AnnotationSwapSet: wl.Name,
				AnnotationSwapReplicas: strconv.Itoa(int(ptrOr(wl.Replicas)))}},
			Spec: v1alpha1.StatefulMigrationSpec{SourcePod: shadow, ContainerName: p.Status.ContainerName,
				TargetNode: p.Status.TargetNode, MigrationStrategy: v1alpha1.StrategyShadowPod,
				TransferMode: p.Status.Plan.TransferMode, CheckpointImageRepository: r.repository(p),
				ReplayMode: replay, ReplayCutoffSeconds: int32(replayCutoff(p).Seconds()),
				MessageQueueConfig: p.Spec.MessageQueueConfig.DeepCopy(), Timeouts: timeoutsOf(p)},
		}
		if err := controllerutil.SetControllerReference(p, child, r.Scheme); err != nil {
			return "", false, err
		}
		if err := r.Create(ctx, child); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", false, err
		}
		s.done(v1alpha1.ConditionIdentitySwapStarted, fmt.Sprintf("identity swap %s moves %s into %s", child.Name, shadow, p.Spec.SourcePod))
		s.event(corev1.EventTypeNormal, "IdentitySwap", "Finalize", "swapping %s into the StatefulSet's pod %s with migration %s", shadow, p.Spec.SourcePod, child.Name)
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	switch child.Status.Phase {
	case v1alpha1.PhaseCompleted:
		p.Status.TargetPod = child.Status.TargetPod
		return fmt.Sprintf("identity swap %s restored %s into %s, owned by StatefulSet %s again", child.Name, shadow, child.Status.TargetPod, wl.Name), true, nil
	case v1alpha1.PhaseFailed:
		return "", false, &failure{reason: v1alpha1.ReasonCutoverFailed, msg: fmt.Sprintf("identity swap %s failed (%s): %s; %s keeps serving outside its StatefulSet",
			child.Name, child.Status.FailureReason, child.Status.FailureMessage, shadow)}
	}
	return "", false, nil
}

// swapOwner is the StatefulSet an identity swap hands its target to.
func swapOwner(m *v1alpha1.StatefulMigration) (string, int32) {
	n, _ := strconv.Atoi(m.Annotations[AnnotationSwapReplicas])
	return m.Annotations[AnnotationSwapSet], int32(n)
}

// prepareSwapTarget gives an identity swap's target the StatefulSet pod's
// DNS identity, and makes the swap its controller until the cutover: the
// scaled-down StatefulSet then neither adopts it (and deletes it as one too
// many) nor, should the swap roll back, recreates the pod beside the shadow
// that still serves. The pod keeps its labels, so it joins its Services
// the moment its cutover gate opens.
func (r *Reconciler) prepareSwapTarget(ctx context.Context, m *v1alpha1.StatefulMigration, pod *corev1.Pod) error {
	set, _ := swapOwner(m)
	sts := &appsv1.StatefulSet{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: set}, sts); err != nil {
		return err
	}
	pod.Spec.Hostname, pod.Spec.Subdomain = pod.Name, sts.Spec.ServiceName
	return controllerutil.SetControllerReference(m, pod, r.Scheme)
}
