package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

// stopSource removes the source pod and reports whether it is gone: only
// then has its consumer stopped taking messages. The delete carries the
// source's UID, so a pod that has since taken its name is never hit.
func (r *Reconciler) stopSource(ctx context.Context, s *scope) (bool, error) {
	if s.isDone(v1alpha1.ConditionSourceStopped) {
		return true, nil
	}
	pod, err := r.sourcePod(ctx, s.m)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && pod.Labels[render.LabelMigration] == s.m.Name):
		s.done(v1alpha1.ConditionSourceStopped, fmt.Sprintf("source pod %s stopped", s.m.Spec.SourcePod))
		stopped := metav1.NewMicroTime(s.now)
		downtime(&s.m.Status).SourceStoppedTime = &stopped
		s.event(corev1.EventTypeNormal, v1alpha1.ConditionSourceStopped, "StopSource", "source pod %s stopped on %s", s.m.Spec.SourcePod, s.m.Status.SourceNode)
		return true, nil
	case err != nil:
		return false, err
	}
	if pod.DeletionTimestamp.IsZero() {
		uid := pod.UID
		err := r.Delete(ctx, pod, client.Preconditions{UID: &uid})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return false, err
		}
	}
	return false, nil
}
