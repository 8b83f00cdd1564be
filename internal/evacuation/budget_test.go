package evacuation

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func TestBudgetRefusal(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-0", Namespace: "shop", Labels: map[string]string{"app": "c"}}}
	pdb := func(name string, app string, allowed int32, gen, observed int64) policyv1.PodDisruptionBudget {
		return policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen},
			Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
			Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: allowed, ObservedGeneration: observed, CurrentHealthy: 1, DesiredHealthy: 1}}
	}
	for _, tc := range []struct {
		name   string
		pdbs   []policyv1.PodDisruptionBudget
		budget string
		says   string
	}{
		{"none", nil, "", ""},
		{"another app's", []policyv1.PodDisruptionBudget{pdb("other", "x", 0, 1, 1)}, "", ""},
		{"allows one", []policyv1.PodDisruptionBudget{pdb("c", "c", 1, 1, 1)}, "c", ""},
		{"allows none", []policyv1.PodDisruptionBudget{pdb("c", "c", 0, 1, 1)}, "c",
			"PodDisruptionBudget c allows no disruption now (1 healthy, 1 needed)"},
		{"not processed", []policyv1.PodDisruptionBudget{pdb("c", "c", 1, 2, 1)}, "c", "has not been processed since its last change"},
		{"two", []policyv1.PodDisruptionBudget{pdb("c", "c", 1, 1, 1), pdb("d", "c", 1, 1, 1)}, "", "selected by 2 PodDisruptionBudgets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, why := BudgetRefusal(pod, tc.pdbs)
			name := ""
			if b != nil {
				name = b.Name
			}
			if name != tc.budget || (tc.says == "") != (why == "") || !strings.Contains(why, tc.says) {
				t.Errorf("budget %q, %q; want %q, %q", name, why, tc.budget, tc.says)
			}
		})
	}
}

func TestOnlySequentialMigrationsDisrupt(t *testing.T) {
	owned := func(kind string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-0", OwnerReferences: []metav1.OwnerReference{{Kind: kind, Name: "c", Controller: new(true)}}}}
	}
	if !disrupts(owned("StatefulSet"), nil) {
		t.Error("a StatefulSet pod migrates Sequential: its place is empty for a while")
	}
	if disrupts(owned("ReplicaSet"), nil) {
		t.Error("a ReplicaSet pod migrates ShadowPod: its place is never empty")
	}
	seq := &v1alpha1.MigrationPolicy{Spec: v1alpha1.MigrationPolicySpec{Defaults: &v1alpha1.MigrationDefaults{MigrationStrategy: v1alpha1.StrategySequential}}}
	if !disrupts(owned("ReplicaSet"), seq) {
		t.Error("a policy's default Sequential strategy disrupts")
	}
}
