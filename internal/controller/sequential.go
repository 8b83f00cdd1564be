package controller

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

const targetPodKey = "pod.json"

// savedTargetName names the ConfigMap that holds a Sequential migration's
// rendered target pod while the source is being replaced.
func savedTargetName(s *scope) string { return "ms2m-" + s.id + "-target" }

// savedTarget returns the rendered target pod, rendering it from the source
// and saving it the first time. It returns nil, nil while it cannot yet.
func (r *Reconciler) savedTarget(ctx context.Context, s *scope) (*corev1.Pod, error) {
	key := client.ObjectKey{Namespace: s.m.Namespace, Name: savedTargetName(s)}
	cm := &corev1.ConfigMap{}
	err := r.APIReader.Get(ctx, key, cm)
	if err == nil {
		pod := &corev1.Pod{}
		if err := json.Unmarshal([]byte(cm.Data[targetPodKey]), pod); err != nil {
			return nil, fmt.Errorf("saved target pod %s: %w", key.Name, err)
		}
		return pod, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	src, err := r.sourcePod(ctx, s.m)
	if err != nil {
		if apierrors.IsNotFound(err) {
			_, ferr := s.fail(v1alpha1.ReasonSourceLost, "source pod %q disappeared before its replacement was rendered", s.m.Spec.SourcePod)
			return nil, ferr
		}
		return nil, err
	}
	pod := r.renderTarget(s, src)
	if err := r.stripOwnerSelector(ctx, s, pod); err != nil {
		return nil, err
	}
	b, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
		Labels: map[string]string{render.LabelMigration: s.m.Name}}, Data: map[string]string{targetPodKey: string(b)}}
	if err := controllerutil.SetControllerReference(s.m, cm, r.Scheme); err != nil {
		return nil, err
	}
	if err := r.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return pod, nil
}

func (r *Reconciler) deleteSavedTarget(ctx context.Context, s *scope) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: savedTargetName(s), Namespace: s.m.Namespace}}
	return client.IgnoreNotFound(r.Delete(ctx, cm))
}

// stripOwnerSelector removes the labels its StatefulSet selects by from a
// Sequential target: the StatefulSet, scaled down meanwhile, would adopt a
// matching pod of its own pod's name and delete it as one too many. The
// labels come back when it is handed back.
func (r *Reconciler) stripOwnerSelector(ctx context.Context, s *scope, pod *corev1.Pod) error {
	wl := s.m.Status.Workload
	if wl == nil || wl.Kind != "StatefulSet" {
		return nil
	}
	sts := &appsv1.StatefulSet{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.m.Namespace, Name: wl.Name}, sts); err != nil {
		return err
	}
	if sts.Spec.Selector != nil {
		for k := range sts.Spec.Selector.MatchLabels {
			delete(pod.Labels, k)
		}
	}
	return nil
}
