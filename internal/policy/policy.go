// Package policy answers, as pure functions, what a cluster admin's
// MigrationPolicies say of one migration: which policy governs its pod,
// the spec it runs with once the policy's defaults fill what it left out,
// and whether a parallelism limit lets it start now.
package policy

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Select returns the policy that governs a pod with podLabels in a
// namespace with nsLabels, or nil when none selects it. Of the policies
// that select it, the one whose selectors name the most labels wins; a
// tie goes to the name first in alphabetical order (KubeVirt's rule for
// its MigrationPolicies). A policy whose selector cannot be parsed is an
// error, not a policy that selects nothing: a migration must not slip out
// of a restrictive policy because of its typo.
func Select(policies []v1alpha1.MigrationPolicy, nsLabels, podLabels map[string]string) (*v1alpha1.MigrationPolicy, error) {
	sorted := make([]*v1alpha1.MigrationPolicy, len(policies))
	for i := range policies {
		sorted[i] = &policies[i]
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var best *v1alpha1.MigrationPolicy
	bestScore := -1
	for _, p := range sorted {
		ns, err := selects(p.Spec.NamespaceSelector, nsLabels)
		if err != nil {
			return nil, fmt.Errorf("MigrationPolicy %s has an invalid namespaceSelector (%v): a cluster admin must fix it before migrations it may govern can start", p.Name, err)
		}
		pod, err := selects(p.Spec.PodSelector, podLabels)
		if err != nil {
			return nil, fmt.Errorf("MigrationPolicy %s has an invalid podSelector (%v): a cluster admin must fix it before migrations it may govern can start", p.Name, err)
		}
		if !ns || !pod {
			continue
		}
		if score := size(p.Spec.NamespaceSelector) + size(p.Spec.PodSelector); score > bestScore {
			best, bestScore = p, score
		}
	}
	return best, nil
}

func selects(sel *metav1.LabelSelector, set map[string]string) (bool, error) {
	if sel == nil {
		return true, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(set)), nil
}

func size(sel *metav1.LabelSelector) int {
	if sel == nil {
		return 0
	}
	return len(sel.MatchLabels) + len(sel.MatchExpressions)
}

// ApplyDefaults returns spec with the policy's defaults in every field the
// spec leaves out (Auto counts as left out only where it is the spec's
// default). The spec itself is not changed.
func ApplyDefaults(spec *v1alpha1.StatefulMigrationSpec, p *v1alpha1.MigrationPolicy) *v1alpha1.StatefulMigrationSpec {
	out := spec.DeepCopy()
	if p == nil || p.Spec.Defaults == nil {
		return out
	}
	d := p.Spec.Defaults
	if out.IsAutoStrategy() && d.MigrationStrategy != "" {
		out.MigrationStrategy = d.MigrationStrategy
	}
	fill(&out.TransferMode, d.TransferMode)
	fill(&out.CheckpointEngine, d.CheckpointEngine)
	fill(&out.Handoff, d.Handoff)
	fill(&out.MemoryTechnique, d.MemoryTechnique)
	fill(&out.ReplayMode, d.ReplayMode)
	fill(&out.CheckpointImageRepository, d.CheckpointImageRepository)
	if out.ReplayCutoffSeconds == 0 {
		out.ReplayCutoffSeconds = d.ReplayCutoffSeconds
	}
	if d.Timeouts != nil {
		if out.Timeouts == nil {
			out.Timeouts = &v1alpha1.MigrationTimeouts{}
		}
		t, dt := out.Timeouts, d.Timeouts
		for _, f := range []struct{ own, def **metav1.Duration }{
			{&t.Total, &dt.Total}, {&t.Checkpoint, &dt.Checkpoint}, {&t.Transfer, &dt.Transfer},
			{&t.Restore, &dt.Restore}, {&t.Replay, &dt.Replay}, {&t.Finalize, &dt.Finalize}, {&t.Progress, &dt.Progress},
		} {
			if *f.own == nil && *f.def != nil {
				v := **f.def
				*f.own = &v
			}
		}
	}
	return out
}

func fill[T ~string](own *T, def T) {
	if *own == "" {
		*own = def
	}
}
