package controller

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// workloadOf finds the controller that owns the pod, one level up through
// ReplicaSets to their Deployment.
func (r *Reconciler) workloadOf(ctx context.Context, pod *corev1.Pod) (v1alpha1.WorkloadStatus, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return v1alpha1.WorkloadStatus{Kind: "Pod"}, nil
	}
	wl := v1alpha1.WorkloadStatus{Kind: ref.Kind, Name: ref.Name}
	switch ref.Kind {
	case "StatefulSet":
		sts := &appsv1.StatefulSet{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: ref.Name}, sts); err != nil {
			return wl, client.IgnoreNotFound(err)
		}
		wl.Replicas = sts.Spec.Replicas
	case "ReplicaSet":
		rs := &appsv1.ReplicaSet{}
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: ref.Name}, rs)
		if apierrors.IsNotFound(err) {
			return wl, nil
		}
		if err != nil {
			return wl, err
		}
		wl.Replicas = rs.Spec.Replicas
		if d := metav1.GetControllerOf(rs); d != nil && d.Kind == "Deployment" {
			wl.Kind, wl.Name = "Deployment", d.Name
		}
	}
	return wl, nil
}
