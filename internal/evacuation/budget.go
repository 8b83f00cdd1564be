package evacuation

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/policy"
)

// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=list
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets/status,verbs=update

// disrupts says whether the migration an eviction would start takes the
// pod out of service for a while: a Sequential one stops the source before
// the target serves, a ShadowPod one never leaves the pod's place empty.
func disrupts(pod *corev1.Pod, pol *v1alpha1.MigrationPolicy) bool {
	kind := ""
	if ref := metav1.GetControllerOf(pod); ref != nil {
		kind = ref.Kind
	}
	strategy, _ := migration.ResolveStrategy(policy.ApplyDefaults(&v1alpha1.StatefulMigrationSpec{}, pol), kind)
	return strategy == v1alpha1.StrategySequential
}

// BudgetRefusal says why the budgets of a pod allow no disruption now
// ("" when one may happen), as the eviction API itself decides it: one
// budget at most may select the pod, it must have seen its latest spec,
// and it must allow a disruption.
func BudgetRefusal(pod *corev1.Pod, pdbs []policyv1.PodDisruptionBudget) (*policyv1.PodDisruptionBudget, string) {
	var match []*policyv1.PodDisruptionBudget
	for i := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdbs[i].Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		match = append(match, &pdbs[i])
	}
	ref := pod.Namespace + "/" + pod.Name
	switch {
	case len(match) == 0:
		return nil, ""
	case len(match) > 1:
		return nil, fmt.Sprintf("pod %s is selected by %d PodDisruptionBudgets (%s and %s); the eviction API does not evict it either", ref, len(match), match[0].Name, match[1].Name)
	}
	b := match[0]
	switch {
	case b.Status.ObservedGeneration < b.Generation:
		return b, fmt.Sprintf("PodDisruptionBudget %s has not been processed since its last change: the eviction is retried", b.Name)
	case b.Status.DisruptionsAllowed < 1:
		return b, fmt.Sprintf("migrating pod %s stops it until its target serves (Sequential), and PodDisruptionBudget %s allows no disruption now (%d healthy, %d needed): the eviction is retried",
			ref, b.Name, b.Status.CurrentHealthy, b.Status.DesiredHealthy)
	}
	return b, ""
}

// takeDisruption counts the migration against the pod's budget the way
// the eviction API counts an eviction: one disruption fewer allowed, the
// pod recorded as disrupted. The update carries the budget's version, so
// of two evictions racing for the last disruption one is refused.
func (w *Webhook) takeDisruption(ctx context.Context, pod *corev1.Pod) (refusal string, err error) {
	b, why, err := w.budgetOf(ctx, pod)
	if err != nil || why != "" || b == nil {
		return why, err
	}
	b = b.DeepCopy()
	b.Status.DisruptionsAllowed--
	if b.Status.DisruptedPods == nil {
		b.Status.DisruptedPods = map[string]metav1.Time{}
	}
	b.Status.DisruptedPods[pod.Name] = metav1.NewTime(time.Now())
	if err := w.Client.Status().Update(ctx, b); err != nil {
		if apierrors.IsConflict(err) {
			return fmt.Sprintf("PodDisruptionBudget %s changed while ms2m counted this eviction against it: the eviction is retried", b.Name), nil
		}
		return "", fmt.Errorf("counting the migration against PodDisruptionBudget %s: %w", b.Name, err)
	}
	return "", nil
}

// budgetRefusal is takeDisruption's answer without the count (a dry run).
func (w *Webhook) budgetRefusal(ctx context.Context, pod *corev1.Pod) (string, error) {
	_, why, err := w.budgetOf(ctx, pod)
	return why, err
}

// budgetOf reads the budgets of the pod's namespace from the API server
// (a count taken on a stale copy would be refused as a conflict anyway).
func (w *Webhook) budgetOf(ctx context.Context, pod *corev1.Pod) (*policyv1.PodDisruptionBudget, string, error) {
	var pdbs policyv1.PodDisruptionBudgetList
	if err := w.Reader.List(ctx, &pdbs, client.InNamespace(pod.Namespace)); err != nil {
		return nil, "", fmt.Errorf("listing the PodDisruptionBudgets of %s: %w", pod.Namespace, err)
	}
	b, why := BudgetRefusal(pod, pdbs.Items)
	return b, why, nil
}
