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
	if spec.Timeouts != nil && spec.Timeouts.Progress != nil {
		t.Progress = d(spec.Timeouts.Progress.Duration)
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

// ResolveBandwidth is what a migration's transfer may take of the network:
// its policy's bandwidthPerMigration, else no bound.
func ResolveBandwidth(pol *v1alpha1.MigrationPolicy, technique v1alpha1.MemoryTechnique) (int64, string) {
	if pol == nil {
		return 0, "unbounded: no MigrationPolicy governs the pod"
	}
	if pol.Spec.Limits == nil || pol.Spec.Limits.BandwidthPerMigration == nil {
		return 0, "unbounded: MigrationPolicy " + pol.Name + " sets no bandwidthPerMigration"
	}
	q := pol.Spec.Limits.BandwidthPerMigration
	why := fmt.Sprintf("MigrationPolicy %s's bandwidthPerMigration (%s/s) bounds the checkpoint's transfer", pol.Name, q.String())
	switch technique {
	case v1alpha1.MemoryStream:
		why += "; the pages streamed during the freeze are not bounded"
	case v1alpha1.MemoryPostCopy:
		why += "; the pages the target takes after its restore are not bounded"
	}
	return q.Value(), why
}

// ResolveEncryption says whether the checkpoint is encrypted on its way:
// always where ms2m's runtime handler restores it (the target's agent
// decrypts it as it stages it); a runtime that restores a checkpoint image
// itself cannot decrypt one, so there it travels as the runtime wrote it.
func ResolveEncryption(restore v1alpha1.RestorePath, target string, canEncrypt bool) (bool, string) {
	switch {
	case restore != v1alpha1.RestoreRuntimeHandler:
		return false, "not encrypted: " + target + "'s runtime restores the checkpoint image itself and could not decrypt it (keep such registries private; the target node verifies nothing either)"
	case !canEncrypt:
		return false, "not encrypted: the manager holds no checkpoint key secret (--checkpoint-key)"
	}
	return true, "AES-256-GCM (Tink's streaming AEAD) with a key for this checkpoint alone, derived by the manager and given to the two agents only: encrypted before it leaves " +
		"the source node, decrypted as " + target + "'s agent stages it"
}

// ContainerInputs are the pod's containers besides the migrated one,
// by kind, and the choices the plan made before them.
type ContainerInputs struct {
	Mode      v1alpha1.OtherContainersMode
	Container string
	// Inits run to completion; Sidecars are restartable init containers;
	// Others the pod's other regular containers.
	Inits, Sidecars, Others []string
	Engine                  v1alpha1.CheckpointEngine
	Restore                 v1alpha1.RestorePath
	Memory                  v1alpha1.MemoryTechnique
	Target                  string
}

// ResolveContainers says what becomes of the pod's containers besides the
// migrated one. Its other regular containers are dumped with it in one cut
// (Checkpoint), which only the Runc engine does, only ms2m's runtime
// handler restores, and only with StopAndCopy (a lazy or streamed dump
// serves one container's pages); or they start fresh. Init containers run
// again on the target as on any node (an emptyDir they fill starts empty
// there), and native sidecars start fresh: they run beside the workload
// and hold no state of its.
func ResolveContainers(in ContainerInputs) (together, fresh []string, why, fail string) {
	if len(in.Inits)+len(in.Sidecars)+len(in.Others) == 0 {
		return nil, nil, "the pod has no container besides " + in.Container, ""
	}
	var parts []string
	if len(in.Inits) > 0 {
		parts = append(parts, "init container(s) "+strings.Join(in.Inits, ", ")+" run again on the target")
	}
	if len(in.Sidecars) > 0 {
		parts = append(parts, "sidecar(s) "+strings.Join(in.Sidecars, ", ")+" start fresh there")
	}
	fresh = append(slices.Clone(in.Inits), in.Sidecars...)
	if len(in.Others) > 0 {
		names := strings.Join(in.Others, ", ")
		if in.Mode == v1alpha1.OtherContainersStartFresh {
			fresh = append(fresh, in.Others...)
			parts = append(parts, "container(s) "+names+" start fresh there, without their memory (otherContainers StartFresh)")
		} else {
			if cannot := cutImpossible(in); cannot != "" {
				return nil, nil, "", fmt.Sprintf("container(s) %s cannot be checkpointed with %s in one cut: %s; set spec.otherContainers: StartFresh to run them anew on the target without their memory",
					names, in.Container, cannot)
			}
			together = slices.Clone(in.Others)
			parts = append(parts, "container(s) "+names+" are checkpointed with "+in.Container+" in one cut and restored with it")
		}
	}
	if len(fresh) == 0 {
		fresh = nil
	}
	return together, fresh, strings.Join(parts, "; "), ""
}

func cutImpossible(in ContainerInputs) string {
	switch {
	case in.Engine != v1alpha1.CheckpointEngineRunc:
		return "only the Runc checkpoint engine pauses several containers for one dump (checkpointEngine is " + string(in.Engine) + ": the kubelet's API pauses one container per call)"
	case in.Restore != v1alpha1.RestoreRuntimeHandler:
		return "only ms2m's runtime handler restores several containers from one checkpoint, and " + in.Target + " restores checkpoint images"
	case in.Memory != v1alpha1.MemoryStopAndCopy:
		return "memory technique " + string(in.Memory) + " moves the pages of one container (use StopAndCopy)"
	}
	return ""
}
