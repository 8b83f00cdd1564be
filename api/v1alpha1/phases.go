package v1alpha1

// Phase is a step of the migration's state machine:
//
//	Pending → Checkpointing → Transferring → Restoring → Replaying → Finalizing → Completed
//	any non-final phase → Failed (after rolling back)
//
// +kubebuilder:validation:Enum=Pending;Checkpointing;Transferring;Restoring;Replaying;Finalizing;Completed;Failed
type Phase string

const (
	// PhasePending: validated and resolved (source, target, strategy); nothing changed yet.
	PhasePending Phase = "Pending"
	// PhaseCheckpointing: the replay queue is bound, the source is checkpointed.
	PhaseCheckpointing Phase = "Checkpointing"
	// PhaseTransferring: the checkpoint moves to the target node.
	PhaseTransferring Phase = "Transferring"
	// PhaseRestoring: the target pod is created from the checkpoint.
	PhaseRestoring Phase = "Restoring"
	// PhaseReplaying: the target replays the buffered messages.
	PhaseReplaying Phase = "Replaying"
	// PhaseFinalizing: cutover: the source stops, the target takes over the
	// primary queue, the replay topology is torn down, ownership handed over.
	PhaseFinalizing Phase = "Finalizing"
	// PhaseCompleted: the target serves; nothing of the migration is left.
	PhaseCompleted Phase = "Completed"
	// PhaseFailed: rolled back; the source serves as before.
	PhaseFailed Phase = "Failed"
)

// Phases lists the non-final phases in order.
var Phases = []Phase{PhasePending, PhaseCheckpointing, PhaseTransferring, PhaseRestoring, PhaseReplaying, PhaseFinalizing}

// IsFinal reports whether the phase is Completed or Failed.
func (p Phase) IsFinal() bool { return p == PhaseCompleted || p == PhaseFailed }

// Index is the phase's position in Phases; final phases come after all of
// them, and an unknown phase (the empty one) before.
func (p Phase) Index() int {
	for i, q := range Phases {
		if q == p {
			return i
		}
	}
	if p.IsFinal() {
		return len(Phases)
	}
	return -1
}

// Condition types. Progressing/Succeeded/Failed summarise; the others record
// each step once it has happened, so a restarted controller knows what is
// done and a user sees which step a migration is at.
const (
	ConditionProgressing = "Progressing"
	ConditionSucceeded   = "Succeeded"
	ConditionFailed      = "Failed"

	// ConditionCredentialsInSpec is True when brokerUrl carries a password.
	ConditionCredentialsInSpec = "CredentialsInSpec"

	ConditionTopologyPrepared = "TopologyPrepared"
	// ConditionReplayCoversSource: everything the source has not applied
	// is in the replay queue, so the checkpoint may be taken.
	ConditionReplayCoversSource = "ReplayCoversSource"
	// ConditionSourceQuiesced: the Handoff technique disconnected the held
	// source's consumer, locked the primary queue and thawed the source.
	ConditionSourceQuiesced = "SourceQuiesced"
	// ConditionTargetPrepared: the target pod was created before the
	// checkpoint (a warm target, RestorePath RuntimeHandler, ShadowPod).
	ConditionTargetPrepared        = "TargetPrepared"
	ConditionCheckpointCreated     = "CheckpointCreated"
	ConditionCheckpointTransferred = "CheckpointTransferred"
	// ConditionCheckpointStaged: the target node's agent unpacked the
	// checkpoint for ms2m's runtime handler (RestorePath RuntimeHandler).
	ConditionCheckpointStaged = "CheckpointStaged"
	ConditionTargetRestored   = "TargetRestored"
	// ConditionMemoryTransferred: with PostCopy, every page of the
	// source's memory has reached the target (its source has ended).
	ConditionMemoryTransferred = "MemoryTransferred"
	ConditionReplayStarted     = "ReplayStarted"
	ConditionReplayCaughtUp    = "ReplayCaughtUp"
	// ConditionTargetServing: the target is Ready and a ready endpoint of
	// every Service that selects it (make before break: only then does
	// the source go).
	// A source with the ms2m SDK lets go of its queue at the cutover
	// (RELEASE) and its pod serves on: then both this and
	// OwnershipTransferred may come after completion.
	ConditionTargetServing = "TargetServing"
	// ConditionSourceStopped: the source consumes nothing any more (its
	// pod gone, or it answered RELEASE).
	ConditionSourceStopped    = "SourceStopped"
	ConditionReplaySealed     = "ReplaySealed"
	ConditionTargetSwitched   = "TargetSwitched"
	ConditionTopologyRestored = "TopologyRestored"
	// ConditionOwnershipTransferred: the source's owner has the target (a
	// ReplicaSet adopted it, a StatefulSet took it back) and the source's
	// pod is gone. After the cutover of a source that released its queue,
	// False (AwaitingKubelet) until the target's kubelet confirmed it Ready.
	ConditionOwnershipTransferred = "OwnershipTransferred"
	ConditionRolledBack           = "RolledBack"
	// ConditionCheckpointRemoved: the checkpoint (the workload's memory) is
	// gone from both nodes and the registry; False says what was left.
	ConditionCheckpointRemoved = "CheckpointRemoved"
	// ConditionStreamIntact: what the target reported of the handoff. True:
	// no sequence gap; False (MessagesLost): the target saw messages
	// missing; Unknown: the target does not report (a workload without the
	// ms2m SDK).
	ConditionStreamIntact = "StreamIntact"
	// ConditionRestoredStateLost: the restored container exited after the
	// migration completed. It is not restored again from the checkpoint
	// (that would go back in time); its owner starts a fresh pod from its
	// image, without the migrated state.
	ConditionRestoredStateLost = "RestoredStateLost"
	// ConditionIdentitySwapStarted names the identity-swap migration a
	// StatefulSet ShadowPod migration started.
	ConditionIdentitySwapStarted = "IdentitySwapStarted"
	// ConditionCleanupBlocked (True) says why the cleanup of a deleted
	// migration has not finished yet; the manager gives up after its
	// deletion deadline and says so in a CleanupAbandoned Event.
	ConditionCleanupBlocked = "CleanupBlocked"
	// ConditionQueued (True) says that a migration waits in Pending for a
	// parallelism limit of its MigrationPolicy, and which one; False once
	// it has started.
	ConditionQueued = "Queued"
)

// Reasons used in conditions, Events and status.failureReason.
const (
	ReasonStarted             = "Started"
	ReasonPhaseEntered        = "PhaseEntered"
	ReasonDone                = "Done"
	ReasonCompleted           = "Completed"
	ReasonSourcePodNotFound   = "SourcePodNotFound"
	ReasonSourcePodNotRunning = "SourcePodNotRunning"
	ReasonContainerNotFound   = "ContainerNotFound"
	ReasonContainerAmbiguous  = "ContainerAmbiguous"
	ReasonTargetIsSource      = "TargetNodeIsSourceNode"
	ReasonTargetNodeNotFound  = "TargetNodeNotFound"
	ReasonTargetNodeNotReady  = "TargetNodeNotReady"
	ReasonNoTargetNode        = "NoSuitableTargetNode"
	ReasonAgentUnavailable    = "AgentUnavailable"
	ReasonBrokerUnreachable   = "BrokerUnreachable"
	ReasonBrokerTopology      = "BrokerTopologyInvalid"
	ReasonCredentials         = "BrokerCredentialsInvalid"
	ReasonNoRepository        = "NoCheckpointRepository"
	ReasonCheckpointFailed    = "CheckpointFailed"
	ReasonTransferFailed      = "TransferFailed"
	ReasonRestoreFailed       = "RestoreFailed"
	ReasonReplayFailed        = "ReplayFailed"
	ReasonCutoverFailed       = "CutoverFailed"
	ReasonTimeout             = "Timeout"
	ReasonAborted             = "Aborted"
	ReasonDeleted             = "Deleted"
	ReasonSourceLost          = "SourcePodLost"
	ReasonTargetLost          = "TargetPodLost"
	ReasonUnsupported         = "Unsupported"
	// ReasonConcurrentMigration: another migration of the same pod (or of
	// the pod it is restoring into) has not ended.
	ReasonConcurrentMigration = "ConcurrentMigration"
	// ReasonNoRestorePath: the target node can restore a checkpoint in no
	// way ms2m knows (its runtime does not, and ms2m's runtime handler is
	// not installed there).
	ReasonNoRestorePath = "NoRestorePath"
	// ReasonNoCheckpointEngine: the checkpoint engine the spec asks for is
	// not available on the source node (or not for this target).
	ReasonNoCheckpointEngine = "NoCheckpointEngine"
	// ReasonNoHandoff: the handoff technique the spec asks for cannot be
	// used for this source (engine, strategy or queue type).
	ReasonNoHandoff = "NoHandoff"
	// ReasonNoMemoryTechnique: the memory technique the spec asks for is
	// not possible for this migration or these nodes.
	ReasonNoMemoryTechnique = "NoMemoryTechnique"
	// ReasonOtherContainers: the pod's other containers cannot be dumped
	// and restored with the migrated one as the plan would move it.
	ReasonOtherContainers = "OtherContainersCannotMove"
	// ReasonPagesLost: a PostCopy migration's page stream broke after the
	// target started running: the target cannot have its whole memory.
	ReasonPagesLost = "PagesLost"
	// ReasonHandoffLockLost: the exclusive consumer that kept a thawed
	// ShadowPod source off its queue was lost (the manager restarted, the
	// broker dropped it) and something consumes the queue again.
	ReasonHandoffLockLost = "HandoffLockLost"
	// ReasonSourceNotConsuming: the source pod does not consume the queue
	// messageQueueConfig names, so no handoff of it can be right.
	ReasonSourceNotConsuming = "SourceNotConsuming"
	// ReasonMessagesLost: the target reported a gap in the stream.
	ReasonMessagesLost = "MessagesLost"
	// ReasonNotReported: the target does not report its handoff.
	ReasonNotReported         = "NotReported"
	ReasonAtLeastOnceWorkload = "CredentialsInBrokerURL"
	// ReasonSourceStopping is SourceStopped's reason (status False) from
	// the moment the source's stop is issued: the point of no return.
	ReasonSourceStopping = "Stopping"
	// ReasonOverdue: a timeout passed after the point of no return, where
	// failing would roll nothing back; the migration keeps rolling forward.
	ReasonOverdue = "Overdue"
	// ReasonLeftBehind: part of the checkpoint could not be removed.
	ReasonLeftBehind = "CheckpointLeftBehind"
	// ReasonTargetNodeUnschedulable: spec.targetNode is cordoned, has a
	// taint the pod does not tolerate or misses its nodeSelector, and the
	// manager's configuration does not let explicit targets override that.
	ReasonTargetNodeUnschedulable = "TargetNodeUnschedulable"
	// ReasonNotAllowed: the migration names a checkpoint registry or a
	// broker the manager's configuration does not allow.
	ReasonNotAllowed = "DestinationNotAllowed"
	// ReasonCleanupAbandoned: a deleted migration could not be cleaned up
	// within the manager's deletion deadline and was let go.
	ReasonCleanupAbandoned = "CleanupAbandoned"
	// ReasonNotAuthenticated: the target's agent found the checkpoint's
	// seal wrong (not its source agent's, or the archive altered) and
	// restored nothing.
	ReasonNotAuthenticated = "CheckpointNotAuthenticated"
	// ReasonNotAllowedByPolicy: the migration's plan uses a technique or a
	// destination its MigrationPolicy does not allow.
	ReasonNotAllowedByPolicy = "NotAllowedByPolicy"
	// ReasonParallelismLimit: the migration waits for a running one to
	// end (Queued).
	ReasonParallelismLimit = "ParallelismLimit"
	// ReasonAdmitted: the migration had a slot under its policy's limits.
	ReasonAdmitted = "Admitted"
)
