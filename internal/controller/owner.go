package controller

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

// The owner of the source pod must neither replace the source when it goes
// nor fight the target: a ReplicaSet adopts the target in the source's
// place; a StatefulSet is scaled down by one while its pod moves and adopts
// the target, which has its pod's name, when scaled back.

// deletionCostAnnotation ranks a ReplicaSet's pods for deletion (lowest
// first).
const deletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// handOverToReplicaSet makes the source's ReplicaSet own the target in
// its place: the source (terminating by now) is ranked first for deletion
// should the ReplicaSet see both, then the target gets the ReplicaSet's
// labels and controller reference.
func (r *Reconciler) handOverToReplicaSet(ctx context.Context, src, target *corev1.Pod) error {
	rs := metav1.GetControllerOf(src)
	if rs == nil || rs.Kind != "ReplicaSet" {
		return nil
	}
	if src.Annotations[deletionCostAnnotation] != strconv.Itoa(minDeletionCost) {
		patch := client.MergeFrom(src.DeepCopy())
		if src.Annotations == nil {
			src.Annotations = map[string]string{}
		}
		src.Annotations[deletionCostAnnotation] = strconv.Itoa(minDeletionCost)
		if err := r.Patch(ctx, src, patch); err != nil {
			return err
		}
	}
	if owner := metav1.GetControllerOf(target); owner != nil && owner.UID == rs.UID {
		return nil
	}
	patch := client.MergeFrom(target.DeepCopy())
	for k, v := range src.Labels {
		target.Labels[k] = v
	}
	delete(target.Labels, render.LabelRole)
	target.OwnerReferences = append(target.OwnerReferences, *rs)
	return r.Patch(ctx, target, patch)
}

const minDeletionCost = -2147483648

// scaleStatefulSet sets the StatefulSet's replicas.
func (r *Reconciler) scaleStatefulSet(ctx context.Context, ns, name string, replicas int32) error {
	sts := &appsv1.StatefulSet{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, sts); err != nil {
		return err
	}
	if ptr.Deref(sts.Spec.Replicas, 1) == replicas {
		return nil
	}
	patch := client.MergeFrom(sts.DeepCopy())
	sts.Spec.Replicas = ptr.To(replicas)
	return r.Patch(ctx, sts, patch)
}

// handBackToStatefulSet scales the StatefulSet back and makes it own the
// target, which carries its pod's name: its labels, current revision and
// controller reference. The order matters: owned while still scaled down,
// the pod would be one too many and deleted; scaled up first, the
// StatefulSet finds the name taken and waits. Without the revision the
// StatefulSet would take the pod for outdated and replace it.
func (r *Reconciler) handBackToStatefulSet(ctx context.Context, ns, set string, replicas int32, target *corev1.Pod) (bool, error) {
	gone := func(err error) error {
		if apierrors.IsNotFound(err) {
			return &failure{reason: v1alpha1.ReasonCutoverFailed, msg: fmt.Sprintf("StatefulSet %s no longer exists; %s serves without an owner", set, target.Name)}
		}
		return err
	}
	if err := r.scaleStatefulSet(ctx, ns, set, replicas); err != nil {
		return false, gone(err)
	}
	sts := &appsv1.StatefulSet{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: set}, sts); err != nil {
		return false, gone(err)
	}
	if owner := metav1.GetControllerOf(target); owner != nil && owner.UID == sts.UID {
		return true, nil
	}
	patch := client.MergeFrom(target.DeepCopy())
	// An identity swap held the pod as its controller until now.
	target.OwnerReferences = slices.DeleteFunc(target.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == "StatefulMigration" && o.Controller != nil && *o.Controller
	})
	for k, v := range sts.Spec.Template.Labels {
		target.Labels[k] = v
	}
	target.Labels[appsv1.StatefulSetPodNameLabel] = target.Name
	target.Labels[appsv1.ControllerRevisionHashLabelKey] = sts.Status.UpdateRevision
	target.Labels[appsv1.PodIndexLabel] = strconv.Itoa(ordinal(target))
	delete(target.Labels, render.LabelRole)
	target.OwnerReferences = append(target.OwnerReferences, metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet",
		Name: sts.Name, UID: sts.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)})
	if err := r.Patch(ctx, target, patch); err != nil {
		return false, err
	}
	return true, nil
}

// restoreOwner puts a failed Sequential migration's StatefulSet back to its
// replicas, so that it recreates the pod: from its image, its memory state
// lost — said in the failure message — but serving again.
func (r *Reconciler) restoreOwner(ctx context.Context, s *scope) error {
	wl := s.m.Status.Workload
	if wl == nil || wl.Kind != "StatefulSet" || wl.Replicas == nil {
		return nil
	}
	err := r.scaleStatefulSet(ctx, s.m.Namespace, wl.Name, *wl.Replicas)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scaling StatefulSet %s back to %d: %w", wl.Name, *wl.Replicas, err)
	}
	return nil
}

// ordinal is a StatefulSet pod's index (its name's numeric suffix).
func ordinal(p *corev1.Pod) int {
	if v, ok := p.Labels[appsv1.PodIndexLabel]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	if i := strings.LastIndexByte(p.Name, '-'); i >= 0 {
		if n, err := strconv.Atoi(p.Name[i+1:]); err == nil {
			return n
		}
	}
	return -1
}

func ptrOr[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
