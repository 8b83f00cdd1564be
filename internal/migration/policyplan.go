package migration

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// refusedByPolicy refuses a plan that uses what its MigrationPolicy does
// not allow, saying what to change.
func refusedByPolicy(pol *v1alpha1.MigrationPolicy, spec *v1alpha1.StatefulMigrationSpec, p v1alpha1.MigrationPlan) *Refusal {
	a := pol.Spec.Allowed
	if a == nil {
		return nil
	}
	refuse := func(what, field string, chosen any, allowed any, why string) *Refusal {
		return &Refusal{v1alpha1.ReasonNotAllowedByPolicy, fmt.Sprintf(
			"MigrationPolicy %s allows %s %v only; this migration's plan has %v (%s): set spec.%s to an allowed one, or ask a cluster admin to change the policy",
			pol.Name, what, allowed, chosen, why, field)}
	}
	switch {
	case len(a.Strategies) > 0 && !slices.Contains(a.Strategies, p.Strategy):
		return refuse("strategies", "migrationStrategy", p.Strategy, a.Strategies, p.StrategyReason)
	case len(a.MemoryTechniques) > 0 && !slices.Contains(a.MemoryTechniques, p.MemoryTechnique):
		return refuse("memory techniques", "memoryTechnique", p.MemoryTechnique, a.MemoryTechniques, p.MemoryTechniqueReason)
	case len(a.TransferModes) > 0 && !slices.Contains(a.TransferModes, p.TransferMode):
		return refuse("transfer modes", "transferMode", p.TransferMode, a.TransferModes, p.TransferModeReason)
	case len(a.Handoffs) > 0 && p.Handoff != "" && !slices.Contains(a.Handoffs, p.Handoff):
		return refuse("handoffs", "handoff", p.Handoff, a.Handoffs, p.HandoffReason)
	}
	if len(a.CheckpointRegistries) > 0 && p.TransferMode == v1alpha1.TransferRegistry {
		host, err := RegistryOf(p.CheckpointRepository)
		if err != nil || !slices.Contains(a.CheckpointRegistries, host) {
			return &Refusal{v1alpha1.ReasonNotAllowedByPolicy, fmt.Sprintf(
				"MigrationPolicy %s lets checkpoints be pushed to %s only, not to %s (a checkpoint is the pod's whole memory): set spec.checkpointImageRepository to a repository there, or use transferMode Direct",
				pol.Name, strings.Join(a.CheckpointRegistries, ", "), p.CheckpointRepository)}
		}
	}
	if c := spec.MessageQueueConfig; len(a.BrokerHosts) > 0 && c != nil {
		if host, raw, outside := BrokerOutside(a.BrokerHosts, c.BrokerURL, c.ManagementURL); outside {
			return &Refusal{v1alpha1.ReasonNotAllowedByPolicy, fmt.Sprintf(
				"MigrationPolicy %s lets migrations use the brokers at %s only, not %q (%s): ask a cluster admin to change the policy",
				pol.Name, strings.Join(a.BrokerHosts, ", "), host, raw)}
		}
	}
	return nil
}

// ResolveTimeouts is every time budget of a migration, each set: the
// spec's (which carries the policy's defaults), else ms2m's. A policy's
// completionTimeoutPerGiB can only shorten the total, in proportion to the
// container's memory (whole GiB, rounded up).
func ResolveTimeouts(spec *v1alpha1.StatefulMigrationSpec, pol *v1alpha1.MigrationPolicy, memoryBytes int64) (v1alpha1.MigrationTimeouts, string) {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	t := v1alpha1.MigrationTimeouts{
		Total:      d(spec.TotalTimeout()),
		Checkpoint: d(spec.PhaseTimeout(v1alpha1.PhaseCheckpointing)),
		Transfer:   d(spec.PhaseTimeout(v1alpha1.PhaseTransferring)),
		Restore:    d(spec.PhaseTimeout(v1alpha1.PhaseRestoring)),
		Replay:     d(spec.PhaseTimeout(v1alpha1.PhaseReplaying)),
		Finalize:   d(spec.PhaseTimeout(v1alpha1.PhaseFinalizing)),
	}
	why := "spec.timeouts where set, ms2m's defaults elsewhere"
	if pol != nil && pol.Spec.Defaults != nil && pol.Spec.Defaults.Timeouts != nil {
		why = "spec.timeouts where set, MigrationPolicy " + pol.Name + "'s defaults and then ms2m's elsewhere"
	}
	if pol == nil || pol.Spec.Limits == nil || pol.Spec.Limits.CompletionTimeoutPerGiB == nil {
		return t, why
	}
	per := pol.Spec.Limits.CompletionTimeoutPerGiB.Duration
	if memoryBytes <= 0 {
		return t, why + fmt.Sprintf("; MigrationPolicy %s's completionTimeoutPerGiB (%s) does not apply: the container has no memory limit or request", pol.Name, per)
	}
	const gib = 1 << 30
	gibs := (memoryBytes + gib - 1) / gib
	if bound := per * time.Duration(gibs); bound < t.Total.Duration {
		t.Total = d(bound)
		why += fmt.Sprintf("; total %s: MigrationPolicy %s allows %s per GiB of the container's %d GiB", bound, pol.Name, per, gibs)
	}
	return t, why
}

// ResolveFreshContainers says what becomes of the pod's containers besides
// the migrated one: ms2m moves one container's memory, and the target runs
// the others anew (init containers run again before it, as they would on
// any node: an emptyDir they fill starts empty there).
func ResolveFreshContainers(container string, inits, others []string) ([]string, string) {
	if len(inits)+len(others) == 0 {
		return nil, "the pod has no container besides " + container
	}
	var parts []string
	if len(inits) > 0 {
		parts = append(parts, "init container(s) "+strings.Join(inits, ", ")+" run again on the target")
	}
	if len(others) > 0 {
		parts = append(parts, "container(s) "+strings.Join(others, ", ")+" start fresh there, without their memory")
	}
	return append(slices.Clone(inits), others...), strings.Join(parts, "; ") + ": only " + container + "'s memory moves"
}
