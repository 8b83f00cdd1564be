package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

// earlierMigration names a migration that has not ended and claims pod
// before m does: one of the same source pod, or the one whose target pod
// is. Two migrations of one pod at once would each stop what the other
// restored. Of two created together, the older (then the first by name)
// goes on; one already past Pending always does. An identity swap and the
// migration that started it are one migration.
func (r *Reconciler) earlierMigration(ctx context.Context, m *v1alpha1.StatefulMigration, pod *corev1.Pod) (string, error) {
	var list v1alpha1.StatefulMigrationList
	if err := r.List(ctx, &list, client.InNamespace(m.Namespace)); err != nil {
		return "", err
	}
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == m.UID || o.Status.Phase.IsFinal() || related(m, o) {
			continue
		}
		claims := o.Spec.SourcePod == m.Spec.SourcePod || pod.Labels[render.LabelMigration] == o.Name
		if !claims || !before(o, m) {
			continue
		}
		phase := o.Status.Phase
		if phase == "" {
			phase = v1alpha1.PhasePending
		}
		return fmt.Sprintf("pod %s is being migrated by StatefulMigration %s (phase %s): one migration per pod at a time; create this one again once that has ended",
			pod.Name, o.Name, phase), nil
	}
	return "", nil
}

// before: o goes first.
func before(o, m *v1alpha1.StatefulMigration) bool {
	if o.Status.Phase != "" && o.Status.Phase != v1alpha1.PhasePending {
		return true
	}
	if !o.CreationTimestamp.Equal(&m.CreationTimestamp) {
		return o.CreationTimestamp.Before(&m.CreationTimestamp)
	}
	return o.Name < m.Name
}

// related: one migration owns the other (an identity swap).
func related(a, b *v1alpha1.StatefulMigration) bool {
	owns := func(x, y *v1alpha1.StatefulMigration) bool {
		ref := metav1.GetControllerOf(y)
		return ref != nil && ref.UID == x.UID
	}
	return owns(a, b) || owns(b, a)
}
