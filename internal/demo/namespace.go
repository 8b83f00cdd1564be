package demo

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// clearNamespace leaves ns existing and empty of what a run creates. It
// deletes the objects rather than the namespace: the namespace controller
// backs off while pods terminate and made every run wait ~15 s for it;
// deleting the objects and waiting for the pods to be gone takes the pods'
// own termination time.
func clearNamespace(ctx context.Context, c client.Client, ns string) error {
	err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	switch {
	case err == nil:
		return nil
	case !apierrors.IsAlreadyExists(err):
		return err
	}
	// A namespace left terminating (by an older version, or by hand)
	// cannot take new objects: wait it out and create it again.
	cur := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: ns}, cur); err != nil {
		return err
	}
	if cur.DeletionTimestamp != nil {
		if err := poll(ctx, 2*time.Minute, func() (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		}); err != nil {
			return fmt.Errorf("namespace %s still terminating: %w", ns, err)
		}
		return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	// Migrations first, so that none acts on a workload while it goes;
	// then the owners before their pods, so that nothing recreates them.
	kinds := []client.Object{&v1alpha1.StatefulMigration{}, &appsv1.Deployment{}, &appsv1.StatefulSet{},
		&appsv1.ReplicaSet{}, &appsv1.ControllerRevision{}, &corev1.Pod{}, &corev1.Service{}}
	for _, obj := range kinds {
		if err := c.DeleteAllOf(ctx, obj, client.InNamespace(ns), client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			return fmt.Errorf("clearing namespace %s of %T: %w", ns, obj, err)
		}
	}
	lists := []client.ObjectList{&v1alpha1.StatefulMigrationList{}, &appsv1.ReplicaSetList{}, &corev1.PodList{}}
	err = poll(ctx, 2*time.Minute, func() (bool, error) {
		for _, l := range lists {
			if err := c.List(ctx, l, client.InNamespace(ns), client.Limit(1)); err != nil {
				return false, err
			}
			if apimeta.LenList(l) > 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s: the last run's pods and migrations are still there: %w", ns, err)
	}
	return nil
}
