package migration

import (
	"fmt"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// HandoffInputs is what the handoff technique is chosen from.
type HandoffInputs struct {
	Want     v1alpha1.Handoff
	Strategy v1alpha1.MigrationStrategy
	// Engine is the resolved checkpoint engine: only Runc can hold the
	// source frozen at its checkpoint.
	Engine v1alpha1.CheckpointEngine
	// Broker: the migration hands a message stream over.
	Broker bool
	// QueueType of the primary queue as the broker reports it (RabbitMQ:
	// classic, quorum, stream); empty when it cannot tell.
	QueueType string
	// SDK: the source consumes its namespaced control queue (the ms2m SDK).
	SDK bool
	// IdentitySwap: a ShadowPod migration of a StatefulSet pod that
	// swaps identities afterwards, or the swap itself.
	IdentitySwap bool
}

// ResolveHandoff chooses how the stream passes to the target.
//
// Handoff holds the source frozen at its checkpoint, so it acknowledges
// nothing the checkpoint lacks and its queue keeps all of it, in order: no
// replay queue, no wait for one to cover what the source holds unapplied,
// and for a workload without the SDK no repeat of what it applied after
// the replay queue was bound. A Sequential source is ended where it
// stands. A ShadowPod source is disconnected from the broker while frozen
// and thawed to serve its HTTP clients, kept off its queue by an
// exclusive consumer, which RabbitMQ enforces on classic queues only.
//
// Auto takes Handoff where it can for a Sequential source, and for a
// ShadowPod source without the SDK, whose replay would wait for its whole
// prefetch to be covered (prefetch ÷ rate: 5 s for 50 messages at 10/s)
// and then apply that much again. An SDK source proves its coverage with
// a fence at once and replays with no processing gap: Replay.
func ResolveHandoff(in HandoffInputs) (technique v1alpha1.Handoff, why, fail string) {
	var cannot string
	switch {
	case in.Engine != v1alpha1.CheckpointEngineRunc:
		cannot = "the source is not dumped with the Runc engine, the only one that can hold it frozen at its checkpoint"
	case in.IdentitySwap:
		cannot = "an identity swap hands the stream over with its own fence"
	case in.Strategy == v1alpha1.StrategyShadowPod && !in.Broker:
		cannot = "a ShadowPod migration without messageQueueConfig has no stream to hand over"
	case in.Strategy == v1alpha1.StrategyShadowPod && in.QueueType != "classic":
		kind := in.QueueType
		if kind == "" {
			kind = "of a type the broker does not report (no management API)"
		} else {
			kind = "a " + kind + " queue"
		}
		cannot = fmt.Sprintf("a ShadowPod source serves on after its checkpoint and is kept off its queue by an exclusive consumer, which RabbitMQ enforces on classic queues only; this queue is %s", kind)
	}
	switch in.Want {
	case v1alpha1.HandoffReplay:
		return v1alpha1.HandoffReplay, "handoff Replay requested", ""
	case v1alpha1.HandoffHandoff:
		if cannot != "" {
			return "", "", "handoff Handoff requested, but " + cannot
		}
		return v1alpha1.HandoffHandoff, "handoff Handoff requested: " + handoffWhy(in.Strategy), ""
	}
	switch {
	case cannot != "":
		return v1alpha1.HandoffReplay, cannot + ": the stream is replayed", ""
	case in.Strategy == v1alpha1.StrategySequential:
		return v1alpha1.HandoffHandoff, handoffWhy(in.Strategy), ""
	case in.SDK:
		return v1alpha1.HandoffReplay, "the source has the ms2m SDK: a fence proves the replay queue covers it at once, and the target replays while the source serves, with no processing gap", ""
	}
	return v1alpha1.HandoffHandoff, "the source has no ms2m SDK, so a replay would wait until its whole prefetch is covered and apply that much again; " + handoffWhy(in.Strategy), ""
}

func handoffWhy(s v1alpha1.MigrationStrategy) string {
	if s == v1alpha1.StrategySequential {
		return "the source is held frozen at its checkpoint and ended there: its queue keeps everything the checkpoint lacks, in order, and the target consumes it directly"
	}
	return "the source is held frozen at its checkpoint and disconnected, so its queue keeps everything the checkpoint lacks, in order; it serves again at once, kept off the queue by an exclusive consumer until the target takes the queue over directly"
}
