package policy

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Governing reads the MigrationPolicies and the pod's namespace and returns
// the policy that governs pod (nil when none does). invalid says why no
// migration the policies may govern can start (a selector that does not
// parse). Read from r as given: the manager reads them from the API server
// when it needs them rather than caching every namespace.
func Governing(ctx context.Context, r client.Reader, pod *corev1.Pod) (_ *v1alpha1.MigrationPolicy, invalid string, _ error) {
	var policies v1alpha1.MigrationPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return nil, "", fmt.Errorf("listing MigrationPolicies: %w", err)
	}
	if len(policies.Items) == 0 {
		return nil, "", nil
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, client.ObjectKey{Name: pod.Namespace}, ns); err != nil {
		return nil, "", fmt.Errorf("reading namespace %s for its labels: %w", pod.Namespace, err)
	}
	pol, err := Select(policies.Items, ns.Labels, pod.Labels)
	if err != nil {
		return nil, err.Error(), nil
	}
	return pol, "", nil
}
