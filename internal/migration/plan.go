package migration

import (
	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

// PlanInputs is what a migration's plan is resolved from: its spec and
// what Pending observed of the source's owner, the two nodes' agents, the
// cluster and the broker. Nothing here is read again later: a node whose
// capabilities change, or a default changed by an upgrade, never changes
// a migration in flight.
type PlanInputs struct {
	Spec *v1alpha1.StatefulMigrationSpec
	// OwnerKind is the source pod's controller kind ("" for a bare pod).
	OwnerKind string
	// SwapLeg: this migration is the same-node second leg of an identity
	// swap.
	SwapLeg bool

	Source, Target           string
	SourceAgent, TargetAgent agentapi.ReadyReport
	// RuntimeClass is the cluster's RuntimeClass of ms2m's runtime handler
	// on the target ("" when there is none for it); SourceRuntimeClass is
	// the source pod's.
	RuntimeClass, SourceRuntimeClass string
	// Repository is the manager's default checkpoint repository ("" when
	// none is configured): Registry transfer pushes there unless the spec
	// (or the policy's defaults) names another.
	Repository string
	// Policy is the MigrationPolicy that governs the source pod (nil when
	// none does). Spec already carries its defaults (policy.ApplyDefaults);
	// the plan records it and is refused what it does not allow.
	Policy *v1alpha1.MigrationPolicy
	// Container is the migrated container. InitContainers are the pod's
	// init containers that run to completion, Sidecars its restartable
	// init containers, OtherContainers its other regular containers.
	Container                                 string
	InitContainers, Sidecars, OtherContainers []string
	// MemoryBytes is the source container's memory limit, or its request
	// without one (0 without either): a policy's completionTimeoutPerGiB
	// scales with it.
	MemoryBytes int64

	// CanEncrypt: the manager holds the secret checkpoint keys are
	// derived from.
	CanEncrypt bool

	// Broker: the migration hands a message stream over; QueueType is
	// its primary queue's type as the broker reports it, SDK whether the
	// source consumes its control queue.
	Broker    bool
	QueueType string
	SDK       bool
}

// Refusal is why a migration cannot start: a condition reason and a
// message that says what to change.
type Refusal struct {
	Reason, Message string
}

// ResolvePlan makes every technique choice of a migration, each with its
// reason, or refuses it. Each choice depends only on the ones before it:
// strategy; how the target restores; how the source is dumped (which the
// restore path constrains); transfer and replay; the handoff (which the
// engine constrains); the memory technique (which needs all of them).
func ResolvePlan(in PlanInputs) (v1alpha1.MigrationPlan, *Refusal) {
	var p v1alpha1.MigrationPlan
	spec := in.Spec
	p.Strategy, p.StrategyReason = ResolveStrategy(spec, in.OwnerKind)

	var fail string
	p.RestorePath, p.RestorePathReason, fail = ResolveRestorePath(in.Target, in.TargetAgent.Restore, in.RuntimeClass, in.SourceRuntimeClass)
	if fail != "" {
		return p, &Refusal{v1alpha1.ReasonNoRestorePath, fail}
	}
	p.CheckpointEngine, p.CheckpointEngineReason, fail = ResolveCheckpointEngine(spec.CheckpointEngine, in.Source, in.SourceAgent.Checkpoint, p.RestorePath)
	if fail != "" {
		return p, &Refusal{v1alpha1.ReasonNoCheckpointEngine, fail}
	}

	p.TransferMode, p.TransferModeReason = spec.EffectiveTransferMode(), "set in spec.transferMode"
	if spec.TransferMode == "" {
		p.TransferModeReason = "the default: the checkpoint is pushed to the registry, from which the target's node pulls it"
	}
	p.CheckpointRepository = spec.CheckpointImageRepository
	if p.CheckpointRepository == "" {
		p.CheckpointRepository = in.Repository
	}
	if p.TransferMode == v1alpha1.TransferRegistry && p.CheckpointRepository == "" {
		return p, &Refusal{v1alpha1.ReasonNoRepository, "transferMode Registry needs spec.checkpointImageRepository (the manager has no default repository configured)"}
	}
	p.ReplayMode, p.ReplayModeReason = spec.EffectiveReplayMode(), "set in spec.replayMode"
	if spec.ReplayMode == "" {
		p.ReplayModeReason = "the default: the target takes over once caught up, or after replayCutoffSeconds, draining the rest first"
	}

	technique, why, fail := ResolveHandoff(HandoffInputs{
		Want: spec.EffectiveHandoff(), Strategy: p.Strategy, Engine: p.CheckpointEngine,
		Broker: in.Broker, QueueType: in.QueueType, SDK: in.SDK,
		IdentitySwap: in.SwapLeg || (p.Strategy == v1alpha1.StrategyShadowPod && in.OwnerKind == "StatefulSet" &&
			spec.EffectiveIdentitySwapMode() != v1alpha1.IdentitySwapNone),
	})
	if fail != "" {
		return p, &Refusal{v1alpha1.ReasonNoHandoff, fail}
	}
	p.Handoff, p.HandoffReason, p.HoldSource = technique, why, technique == v1alpha1.HandoffHandoff

	p.MemoryTechnique, p.MemoryTechniqueReason, fail = ResolveMemoryTechnique(MemoryInputs{
		Want: spec.EffectiveMemoryTechnique(), Strategy: p.Strategy, Engine: p.CheckpointEngine, Restore: p.RestorePath,
		Handoff: p.Handoff, Source: in.Source, Target: in.Target,
		SourceCaps: in.SourceAgent.Checkpoint, TargetCaps: in.TargetAgent.Checkpoint,
	})
	if fail != "" {
		return p, &Refusal{v1alpha1.ReasonNoMemoryTechnique, fail}
	}
	p.CheckpointedContainers, p.FreshContainers, p.FreshContainersReason, fail = ResolveContainers(ContainerInputs{
		Mode: spec.EffectiveOtherContainers(), Container: in.Container,
		Inits: in.InitContainers, Sidecars: in.Sidecars, Others: in.OtherContainers,
		Engine: p.CheckpointEngine, Restore: p.RestorePath, Memory: p.MemoryTechnique, Target: in.Target,
	})
	if fail != "" {
		return p, &Refusal{v1alpha1.ReasonOtherContainers, fail}
	}
	p.BandwidthBytesPerSecond, p.BandwidthReason = ResolveBandwidth(in.Policy, p.MemoryTechnique)
	p.EncryptCheckpoint, p.EncryptionReason = ResolveEncryption(p.RestorePath, in.Target, in.CanEncrypt)
	p.ReplayCutoffSeconds = int32(spec.ReplayCutoff().Seconds())
	timeouts, why := ResolveTimeouts(spec, in.Policy, in.MemoryBytes)
	p.Timeouts, p.TimeoutsReason = &timeouts, why
	if in.Policy != nil {
		p.Policy, p.PolicyGeneration = in.Policy.Name, in.Policy.Generation
		if r := refusedByPolicy(in.Policy, spec, p); r != nil {
			return p, r
		}
	}
	return p, nil
}
