package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ReplayMode decides when the target stops replaying and takes over the
// primary queue.
// +kubebuilder:validation:Enum=Cutoff;Drain
type ReplayMode string

const (
	// ReplayCutoff cuts over after replayCutoffSeconds of replay, or earlier
	// once the target has caught up. The time bound limits how long source
	// and target run side by side; it never drops messages: whatever is still
	// buffered at the cutoff is drained by the target before it takes over.
	ReplayCutoff ReplayMode = "Cutoff"
	// ReplayDrain cuts over only once the target has caught up with the
	// buffered stream, however long that takes (bounded by timeouts.replay).
	ReplayDrain ReplayMode = "Drain"
)

// MigrationStrategy decides how the target takes over the source's identity.
// +kubebuilder:validation:Enum="";auto;Auto;ShadowPod;Sequential
type MigrationStrategy string

const (
	// StrategyAuto picks ShadowPod or Sequential from the source pod's owner.
	StrategyAuto MigrationStrategy = "Auto"
	// StrategyShadowPod restores the target beside the running source; the
	// source keeps serving until cutover (zero downtime).
	StrategyShadowPod MigrationStrategy = "ShadowPod"
	// StrategySequential stops the source after the checkpoint and restores
	// the target under the source's name (StatefulSet identity).
	StrategySequential MigrationStrategy = "Sequential"
)

// TransferMode decides how the checkpoint travels to the target node.
// +kubebuilder:validation:Enum=Registry;Direct
type TransferMode string

const (
	// TransferRegistry pushes the checkpoint image to
	// checkpointImageRepository; the target node pulls it.
	TransferRegistry TransferMode = "Registry"
	// TransferDirect streams the checkpoint from the source node's agent to
	// the target node's agent (authenticated, TLS); no registry involved.
	TransferDirect TransferMode = "Direct"
)

// RestorePath is how the target node's runtime restores the checkpoint.
// +kubebuilder:validation:Enum=RuntimeHandler;CheckpointImage
type RestorePath string

const (
	// RestoreRuntimeHandler: the target node's agent stages the checkpoint
	// and ms2m's runtime handler (RuntimeClass) restores it with runc and
	// CRIU when the kubelet creates the target's container from the
	// workload's own image. Works on every containerd and CRI-O.
	RestoreRuntimeHandler RestorePath = "RuntimeHandler"
	// RestoreCheckpointImage: the target pod's image is the checkpoint
	// image and the runtime restores it inside CreateContainer (containerd
	// before 2.4, unless switched off).
	RestoreCheckpointImage RestorePath = "CheckpointImage"
)

// CheckpointEngine is how the source node dumps the container.
// +kubebuilder:validation:Enum=Auto;Runc;Kubelet
type CheckpointEngine string

const (
	// CheckpointEngineAuto: Runc where the source node's agent can run
	// the runtime's runc and the target restores through ms2m's runtime
	// handler; Kubelet otherwise.
	CheckpointEngineAuto CheckpointEngine = "Auto"
	// CheckpointEngineRunc: the source node's agent dumps the container
	// with the runtime's runc itself: CRIU's own freeze only, and a
	// Sequential source is held frozen at its checkpoint, so its queue
	// keeps everything the checkpoint lacks and no replay is needed.
	CheckpointEngineRunc CheckpointEngine = "Runc"
	// CheckpointEngineKubelet: the kubelet's checkpoint API (the runtime
	// pauses the container for the dump and its archive).
	CheckpointEngineKubelet CheckpointEngine = "Kubelet"
)

// Handoff is how the message stream passes from the source to the target.
// +kubebuilder:validation:Enum=Auto;Replay;Handoff
type Handoff string

const (
	// HandoffAuto: Handoff where the source can be held at its checkpoint
	// (the Runc engine) and either the source is stopped there
	// (Sequential) or it has no ms2m SDK and its queue is a classic queue
	// (ShadowPod); Replay otherwise.
	HandoffAuto Handoff = "Auto"
	// HandoffReplay: MS2M's handoff. The stream is copied into a replay
	// queue from before the checkpoint, while the source keeps consuming;
	// the target replays it, then switches to the primary queue.
	HandoffReplay Handoff = "Replay"
	// HandoffHandoff: the source is held frozen at its checkpoint and its
	// consumer is disconnected there, so everything the checkpoint lacks
	// stays in the primary queue, in order; the target consumes that queue
	// directly, with no replay queue and no wait for one to cover the
	// source. A ShadowPod source is thawed at once and serves its HTTP
	// clients until the target is Ready, kept off the queue meanwhile by
	// an exclusive consumer ms2m holds (classic queues only). Needs the
	// Runc checkpoint engine.
	HandoffHandoff Handoff = "Handoff"
)

// MemoryTechnique is how the container's memory reaches the target node.
// +kubebuilder:validation:Enum=Auto;StopAndCopy;Stream;PostCopy;PreCopy
type MemoryTechnique string

const (
	// MemoryAuto: StopAndCopy. PostCopy is never chosen for you: until
	// its last page has arrived the workload's state is split between two
	// nodes, and losing either node or the link between them loses it.
	MemoryAuto MemoryTechnique = "Auto"
	// MemoryStopAndCopy: the whole memory is dumped, moved and restored
	// before the target runs.
	MemoryStopAndCopy MemoryTechnique = "StopAndCopy"
	// MemoryStream: StopAndCopy without a disk: CRIU sends the memory
	// pages, as it dumps them, to a page server on the target node (over
	// the agents' mutual TLS), and only the rest of the checkpoint goes
	// into the archive and its transfer. The Runc engine onto a node with
	// ms2m's runtime handler and CRIU.
	MemoryStream MemoryTechnique = "Stream"
	// MemoryPostCopy: the target runs as soon as the checkpoint without
	// its memory pages is restored and takes each page as it touches it,
	// the remainder in the background (CRIU lazy pages, userfaultfd): from
	// a Sequential source held frozen, or from a ShadowPod source's dump.
	// The Runc engine onto a node with ms2m's runtime handler, both nodes
	// able to (see the MigrationReady node condition).
	MemoryPostCopy MemoryTechnique = "PostCopy"
	// MemoryPreCopy: iterative pre-dumps while the source runs, so the
	// final dump moves only what changed. Needs the kernel's dirty-memory
	// tracking (soft-dirty) on the source node; not yet implemented, so a
	// migration asking for it is refused in Pending with the reason.
	MemoryPreCopy MemoryTechnique = "PreCopy"
)

// OtherContainersMode says what becomes of a pod's containers besides the
// migrated one.
// +kubebuilder:validation:Enum=Checkpoint;StartFresh
type OtherContainersMode string

const (
	// OtherContainersCheckpoint dumps the pod's other containers with the
	// migrated one, in one consistent cut, and restores them with it.
	OtherContainersCheckpoint OtherContainersMode = "Checkpoint"
	// OtherContainersStartFresh runs them anew on the target, as on any
	// node, without their memory.
	OtherContainersStartFresh OtherContainersMode = "StartFresh"
)

// IdentitySwapMode decides how a ShadowPod target of a StatefulSet gets the
// StatefulSet's pod identity back after cutover.
// +kubebuilder:validation:Enum=None;ExchangeFence;Cutoff
type IdentitySwapMode string

const (
	// IdentitySwapNone leaves the shadow pod under its own name.
	IdentitySwapNone IdentitySwapMode = "None"
	// IdentitySwapExchangeFence re-checkpoints the shadow pod under the
	// StatefulSet's name while a fence queue holds the stream, so the swap
	// loses and duplicates nothing; its replay ends as replayMode says.
	IdentitySwapExchangeFence IdentitySwapMode = "ExchangeFence"
	// IdentitySwapCutoff swaps identity with a time-bounded replay
	// (replayCutoffSeconds), whatever replayMode says.
	IdentitySwapCutoff IdentitySwapMode = "Cutoff"
)

// StatefulMigrationSpec is one live migration of one pod to another node.
// Every field of the MS2M/SHADOW StatefulMigration keeps its name and
// meaning, so their manifests apply unchanged.
type StatefulMigrationSpec struct {
	// SourcePod is the name of the pod to migrate, in the migration's
	// namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="sourcePod must be a pod name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
	SourcePod string `json:"sourcePod"`

	// ContainerName is the container that consumes the message stream: the
	// one whose handoff the migration runs. Empty picks the pod's only
	// container; a pod with several containers needs it.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="containerName must be a container name (RFC 1123 label: lowercase letters, digits and '-')"
	ContainerName string `json:"containerName,omitempty"`

	// OtherContainers says what becomes of the pod's other containers.
	// Checkpoint (the default) dumps them with ContainerName in one
	// consistent cut (all paused before the first dump, none resumed before
	// the last) and restores them with it; a migration whose techniques
	// cannot (the Kubelet checkpoint engine, a target restoring checkpoint
	// images, PostCopy or Stream) is refused in Pending, naming why.
	// StartFresh runs them anew on the target without their memory. Init
	// containers run again on the target either way, and native sidecars
	// (restartable init containers) start fresh there.
	// +optional
	OtherContainers OtherContainersMode `json:"otherContainers,omitempty"`

	// TargetNode is the node to move the pod to. Empty lets ms2m choose a
	// Ready, schedulable node other than the source's.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="targetNode must be a node name: lowercase letters, digits, '-' and '.'"
	TargetNode string `json:"targetNode,omitempty"`

	// CheckpointImageRepository is the OCI repository the checkpoint image
	// is pushed to with transferMode Registry, without tag or digest (for
	// example registry.example.com/ms2m/checkpoints). Empty uses the
	// manager's default repository.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+$')",message="checkpointImageRepository must be a repository without tag or digest, like registry.example.com/ms2m/checkpoints"
	CheckpointImageRepository string `json:"checkpointImageRepository,omitempty"`

	// ReplayCutoffSeconds bounds the replay in replayMode Cutoff. 0 means
	// the default of 120 seconds.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 3600",message="replayCutoffSeconds must be between 0 and 3600 (0 uses the default of 120)"
	ReplayCutoffSeconds int32 `json:"replayCutoffSeconds,omitempty"`

	// ReplayMode is Cutoff (default) or Drain.
	// +optional
	ReplayMode ReplayMode `json:"replayMode,omitempty"`

	// MessageQueueConfig names the queue the workload consumes and the
	// exchange its producers publish to. Without it the pod is moved without
	// a message handoff.
	// +optional
	MessageQueueConfig *MessageQueueConfig `json:"messageQueueConfig,omitempty"`

	// MigrationStrategy is ShadowPod, Sequential, or empty/auto to pick from
	// the source pod's owner (StatefulSet pods: Sequential, others:
	// ShadowPod).
	// +optional
	MigrationStrategy MigrationStrategy `json:"migrationStrategy,omitempty"`

	// TransferMode is Registry (default) or Direct.
	// +optional
	TransferMode TransferMode `json:"transferMode,omitempty"`

	// CheckpointEngine is Auto (default), Runc or Kubelet.
	// +optional
	CheckpointEngine CheckpointEngine `json:"checkpointEngine,omitempty"`

	// Handoff is Auto (default), Replay or Handoff: how the message stream
	// passes to the target (see the Handoff* constants).
	// +optional
	Handoff Handoff `json:"handoff,omitempty"`

	// MemoryTechnique is Auto (default), StopAndCopy, Stream, PostCopy or PreCopy:
	// how the container's memory reaches the target (see the Memory*
	// constants).
	// +optional
	MemoryTechnique MemoryTechnique `json:"memoryTechnique,omitempty"`

	// IdentitySwapMode applies to ShadowPod migrations of StatefulSet pods:
	// None (default), ExchangeFence or Cutoff.
	// +optional
	IdentitySwapMode IdentitySwapMode `json:"identitySwapMode,omitempty"`

	// Timeouts bound the whole migration and each phase.
	// +optional
	Timeouts *MigrationTimeouts `json:"timeouts,omitempty"`

	// Abort requests that the migration stop and roll back: the source keeps
	// serving, the target pod and the replay topology are removed. Honoured
	// until cutover has begun; status.abort reports the outcome. Deleting
	// the StatefulMigration aborts it too.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self || !oldSelf",message="abort cannot be withdrawn once requested"
	Abort bool `json:"abort,omitempty"`
}

// MessageQueueConfig describes the message stream the workload consumes.
// +kubebuilder:validation:XValidation:rule="!self.brokerUrl.startsWith('amqp') || (has(self.exchangeName) && size(self.exchangeName) > 0)",message="messageQueueConfig.exchangeName is required for RabbitMQ: the replay queue is bound to the exchange the producer publishes to (the default exchange cannot be bound)"
type MessageQueueConfig struct {
	// QueueName is the queue the workload consumes.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('amq.')",message="queueName must not start with 'amq.', a prefix RabbitMQ reserves for its own queues"
	QueueName string `json:"queueName"`

	// BrokerURL is the broker's address, for example
	// amqp://rabbitmq.default.svc:5672/vhost. Credentials belong in
	// credentialsSecretRef; a URL that carries them is accepted for
	// compatibility but reported by the CredentialsInSpec condition.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^amqps?://[^/?#@]*@?[^/?#@:]+(:[0-9]{1,5})?(/[^?#]*)?(\\\\?.*)?$') && isURL(self)",message="brokerUrl must be an amqp:// or amqps:// URL with a host, like amqp://rabbitmq.default.svc:5672/"
	BrokerURL string `json:"brokerUrl"`

	// ExchangeName is the exchange the producer publishes to.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	ExchangeName string `json:"exchangeName,omitempty"`

	// RoutingKey is the key that binds the queue to the exchange.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	RoutingKey string `json:"routingKey,omitempty"`

	// CredentialsSecretRef names a Secret in the migration's namespace with
	// the keys "username" and "password" for the broker.
	// +optional
	CredentialsSecretRef *SecretReference `json:"credentialsSecretRef,omitempty"`

	// ManagementURL is the RabbitMQ management API (queue depths and
	// bindings), for example http://rabbitmq.default.svc:15672. Empty
	// derives it from brokerUrl's host on port 15672.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://') && isURL(self)",message="managementUrl must be an http:// or https:// URL"
	ManagementURL string `json:"managementUrl,omitempty"`
}

// SecretReference names a Secret in the migration's namespace.
type SecretReference struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// MigrationTimeouts bound the migration and each of its phases, as Go
// durations ("90s", "5m"). A phase that overruns fails the migration and
// rolls it back.
type MigrationTimeouts struct {
	// Total bounds the whole migration (default 20m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Total *metav1.Duration `json:"total,omitempty"`
	// Checkpoint bounds Checkpointing (default 2m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Checkpoint *metav1.Duration `json:"checkpoint,omitempty"`
	// Transfer bounds Transferring (default 5m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Transfer *metav1.Duration `json:"transfer,omitempty"`
	// Restore bounds Restoring (default 3m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Restore *metav1.Duration `json:"restore,omitempty"`
	// Replay bounds Replaying (default 10m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Replay *metav1.Duration `json:"replay,omitempty"`
	// Finalize bounds Finalizing (default 3m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Finalize *metav1.Duration `json:"finalize,omitempty"`
	// Progress bounds how long the checkpoint's transfer (and, for a
	// Registry transfer, its pull to the target node) may go without
	// moving a byte before the migration fails and rolls back: a stalled
	// link or registry fails fast instead of at the Transfer timeout.
	// Default: none.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	Progress *metav1.Duration `json:"progress,omitempty"`
}

// StatefulMigrationStatus is what ms2m observed and did.
type StatefulMigrationStatus struct {
	// ObservedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase is where the migration is.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Conditions: Progressing, Succeeded, Failed and one per step the
	// migration has taken (see the Condition* constants).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// StartTime is when the controller took the migration up.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when it reached Completed or Failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// TotalDuration is from taking the migration up to Completed or Failed,
	// to the microsecond.
	// +optional
	TotalDuration *metav1.Duration `json:"totalDuration,omitempty"`

	// PhaseTimings holds the start, end and duration of every phase entered.
	// +optional
	// +listType=map
	// +listMapKey=phase
	PhaseTimings []PhaseTiming `json:"phaseTimings,omitempty"`

	// SourceNode is the node the source pod runs on.
	// +optional
	SourceNode string `json:"sourceNode,omitempty"`
	// SourceUID is the UID of the source pod when the migration started:
	// a pod that has taken its name since is never stopped as the source.
	// +optional
	SourceUID types.UID `json:"sourceUID,omitempty"`
	// TargetNode is the node chosen for the target pod.
	// +optional
	TargetNode string `json:"targetNode,omitempty"`
	// TargetNodeReason says why that node was chosen.
	// +optional
	TargetNodeReason string `json:"targetNodeReason,omitempty"`
	// TargetPod is the restored pod.
	// +optional
	TargetPod string `json:"targetPod,omitempty"`
	// ContainerName is the container checkpointed.
	// +optional
	ContainerName string `json:"containerName,omitempty"`
	// Plan is every technique this migration uses, each with the reason it
	// was chosen, resolved once in Pending from the spec, the nodes' agents
	// and the broker. Phases read the plan, never the spec's defaults, so
	// a migration in flight keeps the choices it started with.
	// +optional
	Plan MigrationPlan `json:"plan,omitempty"`

	// Workload is the source pod's controller, as found before migrating.
	// +optional
	Workload *WorkloadStatus `json:"workload,omitempty"`
	// Checkpoint describes the checkpoint taken.
	// +optional
	Checkpoint *CheckpointStatus `json:"checkpoint,omitempty"`
	// Transfer reports the checkpoint's journey to the target node.
	// +optional
	Transfer *TransferStatus `json:"transfer,omitempty"`
	// Messages reports the message handoff.
	// +optional
	Messages *MessageStatus `json:"messages,omitempty"`
	// Broker records what the migration changed on the broker, so that
	// teardown puts back exactly what was there.
	// +optional
	Broker *BrokerStatus `json:"broker,omitempty"`
	// Downtime is what the controller measured of the switch.
	// +optional
	Downtime *DowntimeStatus `json:"downtime,omitempty"`

	// FailureReason is a CamelCase cause when Phase is Failed.
	// +optional
	FailureReason string `json:"failureReason,omitempty"`
	// FailureMessage explains the failure to a human.
	// +optional
	FailureMessage string `json:"failureMessage,omitempty"`
	// FailedPhase is the phase the failure happened in.
	// +optional
	FailedPhase Phase `json:"failedPhase,omitempty"`

	// Abort reports an abort request and its outcome.
	// +optional
	Abort *AbortStatus `json:"abort,omitempty"`
}

// MigrationPlan is the resolved technique for each choice a migration
// makes, with the reason for each.
type MigrationPlan struct {
	// Strategy is ShadowPod or Sequential.
	// +optional
	Strategy MigrationStrategy `json:"strategy,omitempty"`
	// StrategyReason says why that strategy was chosen.
	// +optional
	StrategyReason string `json:"strategyReason,omitempty"`
	// TransferMode is how the checkpoint reaches the target node.
	// +optional
	TransferMode TransferMode `json:"transferMode,omitempty"`
	// TransferModeReason says why.
	// +optional
	TransferModeReason string `json:"transferModeReason,omitempty"`
	// ReplayMode is how a replay ends.
	// +optional
	ReplayMode ReplayMode `json:"replayMode,omitempty"`
	// ReplayModeReason says why.
	// +optional
	ReplayModeReason string `json:"replayModeReason,omitempty"`
	// RestorePath is how the target node restores the checkpoint, resolved
	// from what its agent reports.
	// +optional
	RestorePath RestorePath `json:"restorePath,omitempty"`
	// RestorePathReason says why.
	// +optional
	RestorePathReason string `json:"restorePathReason,omitempty"`
	// CheckpointEngine is how the source node dumps the container,
	// resolved from the spec and what its agent reports.
	// +optional
	CheckpointEngine CheckpointEngine `json:"checkpointEngine,omitempty"`
	// CheckpointEngineReason says why.
	// +optional
	CheckpointEngineReason string `json:"checkpointEngineReason,omitempty"`
	// HoldSource: the source is frozen at its checkpoint (the Runc engine
	// and the Handoff technique): its queue keeps, in order, everything
	// the checkpoint lacks, so no replay queue is fed and no coverage is
	// waited for. A Sequential source is stopped from there; a ShadowPod
	// source is disconnected from the broker and thawed.
	// +optional
	HoldSource bool `json:"holdSource,omitempty"`
	// Handoff is the resolved handoff technique, Replay or Handoff.
	// +optional
	Handoff Handoff `json:"handoff,omitempty"`
	// HandoffReason says why that technique was chosen.
	// +optional
	HandoffReason string `json:"handoffReason,omitempty"`
	// MemoryTechnique is the resolved memory technique, StopAndCopy,
	// Stream or PostCopy.
	// +optional
	MemoryTechnique MemoryTechnique `json:"memoryTechnique,omitempty"`
	// MemoryTechniqueReason says why.
	// +optional
	MemoryTechniqueReason string `json:"memoryTechniqueReason,omitempty"`

	// CheckpointedContainers are the pod's containers dumped and restored
	// with the migrated one, in the same cut (spec.otherContainers
	// Checkpoint).
	// +optional
	CheckpointedContainers []string `json:"checkpointedContainers,omitempty"`
	// FreshContainers are the pod's containers the target runs anew, as on
	// any node, without their memory (init containers, native sidecars,
	// and with spec.otherContainers StartFresh the other containers);
	// FreshContainersReason says what becomes of each kind, or that the
	// pod has no other container.
	// +optional
	FreshContainers []string `json:"freshContainers,omitempty"`
	// +optional
	FreshContainersReason string `json:"freshContainersReason,omitempty"`

	// Policy is the MigrationPolicy that governed this migration ("" when
	// none selects its pod); PolicyGeneration is the generation it had
	// when the plan was resolved. A policy changed since does not change
	// this migration.
	// +optional
	Policy string `json:"policy,omitempty"`
	// +optional
	PolicyGeneration int64 `json:"policyGeneration,omitempty"`
	// CheckpointRepository is where a Registry transfer pushes: the
	// spec's, the policy's default or the manager's.
	// +optional
	CheckpointRepository string `json:"checkpointRepository,omitempty"`
	// ReplayCutoffSeconds is when a Cutoff replay ends: the spec's, the
	// policy's default or ms2m's.
	// +optional
	ReplayCutoffSeconds int32 `json:"replayCutoffSeconds,omitempty"`
	// Timeouts are the time budgets the migration runs under, each one
	// set; TimeoutsReason says where they come from.
	// +optional
	Timeouts *MigrationTimeouts `json:"timeouts,omitempty"`
	// +optional
	TimeoutsReason string `json:"timeoutsReason,omitempty"`
	// EncryptCheckpoint: the source's agent encrypts the checkpoint before
	// it leaves its node, with a key for this checkpoint alone that only
	// the two agents are given, and the target's agent decrypts it as it
	// stages it; EncryptionReason says why it is, or is not.
	// +optional
	EncryptCheckpoint bool `json:"encryptCheckpoint,omitempty"`
	// +optional
	EncryptionReason string `json:"encryptionReason,omitempty"`
	// BandwidthBytesPerSecond bounds what the checkpoint's transfer takes
	// of the network (0: unbounded); BandwidthReason says why.
	// +optional
	BandwidthBytesPerSecond int64 `json:"bandwidthBytesPerSecond,omitempty"`
	// +optional
	BandwidthReason string `json:"bandwidthReason,omitempty"`
}

// PhaseTiming is one phase's time span.
type PhaseTiming struct {
	// Phase is the phase measured.
	Phase Phase `json:"phase"`
	// Start is when the phase was entered.
	Start metav1.MicroTime `json:"start"`
	// End is when the phase was left; empty while it runs.
	// +optional
	End *metav1.MicroTime `json:"end,omitempty"`
	// Duration is End - Start.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
}

// WorkloadStatus is the source pod's owner as found before migrating.
type WorkloadStatus struct {
	// Kind is Pod (no controller), Deployment, StatefulSet, ReplicaSet, ...
	Kind string `json:"kind"`
	// Name of the owner.
	// +optional
	Name string `json:"name,omitempty"`
	// Replicas is the owner's replica count before migrating, restored on
	// rollback.
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
}

// CheckpointStatus describes the checkpoint taken of the source container.
type CheckpointStatus struct {
	// ID identifies the checkpoint on the source node.
	// +optional
	ID string `json:"id,omitempty"`
	// Image is the checkpoint image the target restores from.
	// +optional
	Image string `json:"image,omitempty"`
	// SizeBytes is the size of the checkpoint archive.
	// +optional
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// CreatedAt is when the source node finished the checkpoint.
	// +optional
	CreatedAt *metav1.Time `json:"createdAt,omitempty"`
	// FreezeDuration is how long the source was frozen by the checkpoint.
	// +optional
	FreezeDuration *metav1.Duration `json:"freezeDuration,omitempty"`
}

// TransferStatus reports the checkpoint's transfer.
type TransferStatus struct {
	// BytesTotal is the size to move.
	// +optional
	BytesTotal int64 `json:"bytesTotal,omitempty"`
	// BytesTransferred is what has arrived.
	// +optional
	BytesTransferred int64 `json:"bytesTransferred,omitempty"`
	// BytesRemaining is BytesTotal - BytesTransferred.
	// +optional
	BytesRemaining int64 `json:"bytesRemaining,omitempty"`
	// RateBytesPerSecond is the measured transfer rate.
	// +optional
	RateBytesPerSecond int64 `json:"rateBytesPerSecond,omitempty"`
	// ETASeconds is when the transfer should end at that rate, while it
	// runs.
	// +optional
	ETASeconds int64 `json:"etaSeconds,omitempty"`
	// BytesStaged is what the target node has unpacked for ms2m's runtime
	// handler (pulled from the registry for a Registry transfer).
	// +optional
	BytesStaged int64 `json:"bytesStaged,omitempty"`
	// LastProgressTime is when the transfer last moved a byte (see
	// timeouts.progress).
	// +optional
	LastProgressTime *metav1.Time `json:"lastProgressTime,omitempty"`
	// PageBytes is the memory that moved apart from the checkpoint: the
	// pages the target took from the source after its restore (PostCopy),
	// or that the source's CRIU sent to the target's page server as it
	// dumped them (Stream).
	// +optional
	PageBytes int64 `json:"pageBytes,omitempty"`
}

// MessageStatus reports the message handoff.
type MessageStatus struct {
	// Buffered is how many messages the replay queue held when replay began.
	// +optional
	Buffered int64 `json:"buffered,omitempty"`
	// Replayed is how many of them the target has consumed.
	// +optional
	Replayed int64 `json:"replayed,omitempty"`
	// Remaining is how many still wait in the replay queue.
	// +optional
	Remaining int64 `json:"remaining,omitempty"`
	// ReplayStartTime is when START_REPLAY was sent.
	// +optional
	ReplayStartTime *metav1.MicroTime `json:"replayStartTime,omitempty"`
	// Target is what the restored target reported of the handoff; empty
	// for a workload that does not report (one without the ms2m SDK,
	// which gets at-least-once delivery).
	// +optional
	Target *TargetReport `json:"target,omitempty"`
}

// TargetReport is what the restored target counted from START_REPLAY to
// its switch to the primary queue.
type TargetReport struct {
	// Reporting: the target answered START_REPLAY and will report.
	Reporting bool `json:"reporting,omitempty"`
	// Done: it reported its switch to the primary queue.
	Done bool `json:"done,omitempty"`
	// Replayed messages it applied from the replay queue.
	// +optional
	Replayed int64 `json:"replayed,omitempty"`
	// DuplicatesSkipped: messages it had applied already (before the
	// checkpoint), skipped by sequence number.
	// +optional
	DuplicatesSkipped int64 `json:"duplicatesSkipped,omitempty"`
	// Gaps counts jumps in a producer's sequence; Lost sums the messages
	// jumped over. Both are zero in a correct handoff.
	// +optional
	Gaps int64 `json:"gaps,omitempty"`
	// +optional
	Lost int64 `json:"lost,omitempty"`
}

// BrokerStatus records the migration's changes to the broker.
type BrokerStatus struct {
	// ReplayQueue duplicates the stream from before the checkpoint on.
	// +optional
	ReplayQueue string `json:"replayQueue,omitempty"`
	// ReplayBoundTime is when the replay queue started to receive the
	// stream.
	// +optional
	ReplayBoundTime *metav1.MicroTime `json:"replayBoundTime,omitempty"`
	// SourceControlQueue is the control queue the source reads, as found
	// before the checkpoint: the namespaced one an SDK workload consumes,
	// or MS2M's, named by the pod alone, which a workload written for MS2M
	// consumes or polls. The restored target, the same program, reads the
	// same kind of queue under its own pod's name.
	// +optional
	SourceControlQueue string `json:"sourceControlQueue,omitempty"`
	// ControlQueue carries START_REPLAY / END_REPLAY to the target.
	// +optional
	ControlQueue string `json:"controlQueue,omitempty"`
	// FencesSent counts the fence messages put into the workload's queue
	// alone after the bind: the ms2m SDK acks them unapplied, and the
	// source being handed them shows it applied everything older.
	// +optional
	FencesSent int32 `json:"fencesSent,omitempty"`
	// SourcePassedFence: the source reported reaching a fence, so it has
	// applied everything queued before it.
	// +optional
	SourcePassedFence bool `json:"sourcePassedFence,omitempty"`
	// SourceReleases: the source said, at its fence, that it understands
	// RELEASE (the ms2m SDK): at cutover it is told to let go of the queue
	// and its pod is removed after the migration has completed, once the
	// target's kubelet has confirmed it Ready.
	// +optional
	SourceReleases bool `json:"sourceReleases,omitempty"`
	// ReleaseSentTime is when RELEASE went to the source.
	// +optional
	ReleaseSentTime *metav1.MicroTime `json:"releaseSentTime,omitempty"`
	// ReplyQueue carries the target's reports back (REPLAY_STARTED,
	// REPLAY_DONE), from workloads that report (the ms2m SDK).
	// +optional
	ReplyQueue string `json:"replyQueue,omitempty"`
	// AddedBindings were created by the migration and are removed by
	// teardown.
	// +optional
	AddedBindings []Binding `json:"addedBindings,omitempty"`
	// RemovedBindings existed before the migration and are put back by
	// teardown.
	// +optional
	RemovedBindings []Binding `json:"removedBindings,omitempty"`
	// PrimaryConsumersAtStop counts the primary queue's consumers when the
	// source was deleted: one fewer means the source has let go of it.
	// +optional
	PrimaryConsumersAtStop *int32 `json:"primaryConsumersAtStop,omitempty"`
	// PrimaryConsumersAtSwitch counts the primary queue's consumers when
	// END_REPLAY was sent (the source gone, the target not yet on it): one
	// more means the target has switched.
	// +optional
	PrimaryConsumersAtSwitch *int32 `json:"primaryConsumersAtSwitch,omitempty"`
	// SourceDisconnected names the broker connection of the source's
	// consumer that the Handoff technique closed while the source was
	// held frozen (the broker then took back, in order, what it held
	// unacknowledged).
	// +optional
	SourceDisconnected string `json:"sourceDisconnected,omitempty"`
	// PrimaryLocked: ms2m holds an exclusive consumer on the primary
	// queue, which keeps a thawed ShadowPod source (and the target, until
	// the source is gone) from consuming it. Teardown releases it; the
	// broker takes back the one message it holds, at the head of the
	// queue.
	// +optional
	PrimaryLocked bool `json:"primaryLocked,omitempty"`
	// DeclaredQueues were declared by the migration and are deleted by
	// teardown.
	// +optional
	DeclaredQueues []string `json:"declaredQueues,omitempty"`
	// DeclaredExchanges were declared by the migration and are deleted by
	// teardown.
	// +optional
	DeclaredExchanges []string `json:"declaredExchanges,omitempty"`
}

// Binding is one binding from an exchange to a queue or, with ToExchange,
// to another exchange.
type Binding struct {
	// Exchange is the source exchange.
	Exchange string `json:"exchange"`
	// Queue is the destination queue.
	// +optional
	Queue string `json:"queue,omitempty"`
	// ToExchange is the destination exchange of an exchange-to-exchange
	// binding (then Queue is empty).
	// +optional
	ToExchange string `json:"toExchange,omitempty"`
	// RoutingKey of the binding.
	// +optional
	RoutingKey string `json:"routingKey,omitempty"`
	// Arguments of the binding as a JSON object (headers exchanges match
	// on them); empty for none.
	// +optional
	Arguments string `json:"arguments,omitempty"`
}

// DowntimeStatus is what the controller measured of the switch.
type DowntimeStatus struct {
	// Unavailable is how long no pod of the workload was Ready (the source
	// gone, the target not yet Ready). ShadowPod migrations keep it at zero.
	// +optional
	Unavailable *metav1.Duration `json:"unavailable,omitempty"`
	// HandoffGap is from the source being stopped to the target consuming
	// the primary queue: the window in which no consumer took new messages
	// from it.
	// +optional
	HandoffGap *metav1.Duration `json:"handoffGap,omitempty"`
	// SourceStoppedTime is when the source pod was gone.
	// +optional
	SourceStoppedTime *metav1.MicroTime `json:"sourceStoppedTime,omitempty"`
	// TargetSwitchedTime is when the target was seen consuming the primary
	// queue.
	// +optional
	TargetSwitchedTime *metav1.MicroTime `json:"targetSwitchedTime,omitempty"`
}

// AbortOutcome is what became of an abort request.
type AbortOutcome string

const (
	// AbortPending: requested, rollback in progress.
	AbortPending AbortOutcome = "Pending"
	// AbortSucceeded: rolled back; the source serves as before.
	AbortSucceeded AbortOutcome = "Succeeded"
	// AbortRejected: too late, the target had already taken over; the
	// migration completes instead.
	AbortRejected AbortOutcome = "Rejected"
)

// AbortStatus reports an abort request and its outcome.
type AbortStatus struct {
	// RequestedAt is when the controller saw the request.
	RequestedAt metav1.Time `json:"requestedAt"`
	// Outcome of the request.
	Outcome AbortOutcome `json:"outcome"`
	// Message explains the outcome.
	// +optional
	Message string `json:"message,omitempty"`
}

// StatefulMigration moves one running pod, memory and message stream
// included, to another node.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=smig;migration,categories=ms2m
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.sourcePod`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="From",type=string,JSONPath=`.status.sourceNode`
// +kubebuilder:printcolumn:name="To",type=string,JSONPath=`.status.targetNode`
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.status.plan.strategy`
// +kubebuilder:printcolumn:name="Handoff",type=string,JSONPath=`.status.plan.handoff`
// +kubebuilder:printcolumn:name="Target Pod",type=string,JSONPath=`.status.targetPod`,priority=1
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.status.totalDuration`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.failureReason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || (self.spec.sourcePod == oldSelf.spec.sourcePod && has(self.spec.containerName) == has(oldSelf.spec.containerName) && (!has(self.spec.containerName) || self.spec.containerName == oldSelf.spec.containerName) && has(self.spec.otherContainers) == has(oldSelf.spec.otherContainers) && (!has(self.spec.otherContainers) || self.spec.otherContainers == oldSelf.spec.otherContainers) && has(self.spec.targetNode) == has(oldSelf.spec.targetNode) && (!has(self.spec.targetNode) || self.spec.targetNode == oldSelf.spec.targetNode) && has(self.spec.checkpointImageRepository) == has(oldSelf.spec.checkpointImageRepository) && (!has(self.spec.checkpointImageRepository) || self.spec.checkpointImageRepository == oldSelf.spec.checkpointImageRepository) && has(self.spec.replayCutoffSeconds) == has(oldSelf.spec.replayCutoffSeconds) && (!has(self.spec.replayCutoffSeconds) || self.spec.replayCutoffSeconds == oldSelf.spec.replayCutoffSeconds) && has(self.spec.replayMode) == has(oldSelf.spec.replayMode) && (!has(self.spec.replayMode) || self.spec.replayMode == oldSelf.spec.replayMode) && has(self.spec.migrationStrategy) == has(oldSelf.spec.migrationStrategy) && (!has(self.spec.migrationStrategy) || self.spec.migrationStrategy == oldSelf.spec.migrationStrategy) && has(self.spec.transferMode) == has(oldSelf.spec.transferMode) && (!has(self.spec.transferMode) || self.spec.transferMode == oldSelf.spec.transferMode) && has(self.spec.identitySwapMode) == has(oldSelf.spec.identitySwapMode) && (!has(self.spec.identitySwapMode) || self.spec.identitySwapMode == oldSelf.spec.identitySwapMode) && has(self.spec.checkpointEngine) == has(oldSelf.spec.checkpointEngine) && (!has(self.spec.checkpointEngine) || self.spec.checkpointEngine == oldSelf.spec.checkpointEngine) && has(self.spec.handoff) == has(oldSelf.spec.handoff) && (!has(self.spec.handoff) || self.spec.handoff == oldSelf.spec.handoff) && has(self.spec.memoryTechnique) == has(oldSelf.spec.memoryTechnique) && (!has(self.spec.memoryTechnique) || self.spec.memoryTechnique == oldSelf.spec.memoryTechnique) && has(self.spec.messageQueueConfig) == has(oldSelf.spec.messageQueueConfig) && (!has(self.spec.messageQueueConfig) || self.spec.messageQueueConfig == oldSelf.spec.messageQueueConfig) && has(self.spec.timeouts) == has(oldSelf.spec.timeouts) && (!has(self.spec.timeouts) || self.spec.timeouts == oldSelf.spec.timeouts))",message="spec is immutable once the migration has started; only spec.abort may still change (create a new StatefulMigration to migrate differently)"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.identitySwapMode) || self.spec.identitySwapMode == 'None' || !has(self.spec.migrationStrategy) || self.spec.migrationStrategy != 'Sequential'",message="spec.identitySwapMode applies to ShadowPod migrations only: a Sequential migration already keeps the StatefulSet identity; drop identitySwapMode or use migrationStrategy ShadowPod"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.identitySwapMode) || self.spec.identitySwapMode == 'None' || has(self.spec.messageQueueConfig)",message="spec.identitySwapMode needs spec.messageQueueConfig: the identity swap fences the message stream on the broker"
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters: it names the migration's broker queues and pod labels"
type StatefulMigration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec StatefulMigrationSpec `json:"spec"`
	// +optional
	Status StatefulMigrationStatus `json:"status,omitempty"`
}

// StatefulMigrationList is a list of StatefulMigrations.
// +kubebuilder:object:root=true
type StatefulMigrationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []StatefulMigration `json:"items"`
}

func init() {
	SchemeBuilder.Register(&StatefulMigration{}, &StatefulMigrationList{})
}
