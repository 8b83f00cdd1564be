package controller

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

// noteRestoredExit tells when a completed migration's restored container
// has exited (its pod events wake the migration). It is never restored
// again from the checkpoint: the pod's RestartPolicy is Never, because the
// checkpoint's state is older than what the broker has since forgotten.
// What happens instead is said (RestoredStateLost and a Warning), and the
// dead pod of a ReplicaSet, which has already started a fresh one from its
// image, is removed; its control queue goes in any case. A StatefulSet replaces its
// failed pod itself; a pod without an owner is kept, as its only record.
func (r *Reconciler) noteRestoredExit(ctx context.Context, s *scope) error {
	st := &s.m.Status
	target, err := r.targetPod(ctx, s.m)
	// A pod being deleted (a rollout, a scale-down, a drain) is not a
	// death of the restored state.
	if err != nil || target == nil || target.Labels[render.LabelMigration] != s.m.Name || !target.DeletionTimestamp.IsZero() {
		return err
	}
	why := restoreFailure(target, st.ContainerName)
	if why == "" {
		return nil
	}
	owner := metav1.GetControllerOf(target)
	if !s.isDone(v1alpha1.ConditionRestoredStateLost) {
		next := "nothing restarts it (the source pod had no owner)"
		if owner != nil {
			next = owner.Kind + " " + owner.Name + " starts a fresh pod from its image, without the migrated state"
		}
		msg := "restored pod " + target.Name + " on " + target.Spec.NodeName + " exited after the migration completed (" + why +
			"); it is not restored again from the checkpoint, whose state is out of date: " + next
		s.done(v1alpha1.ConditionRestoredStateLost, msg)
		s.event(corev1.EventTypeWarning, v1alpha1.ConditionRestoredStateLost, "Aftercare", "%s", msg)
		if s.hasBroker() {
			// Its control queue goes with it (one a live pod of the
			// same name consumes is left alone).
			if h, err := s.brokerSession(ctx); err == nil {
				s.deleteControlQueues(ctx, h, target.Name)
			}
		}
	}
	if owner == nil || owner.Kind != "ReplicaSet" {
		return nil
	}
	uid := target.UID
	if err := r.Delete(ctx, target, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}
