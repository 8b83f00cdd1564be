package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MigrationPolicy is a cluster admin's word on the migrations of the pods it
// selects: which techniques and destinations they may use, how many may run
// at once, how long they may take, and the settings a migration inherits
// where its spec is silent. It is cluster-scoped, so only who may write
// cluster-scoped objects of this group (cluster admins) writes it.
//
// Of the policies that select a pod, the one whose selectors name the most
// labels governs its migrations; a tie goes to the name first in
// alphabetical order. A migration resolves its policy once, in Pending, and
// records it in status.plan: a policy changed later changes migrations that
// have not started yet, never one in flight.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=mpol,categories=ms2m
// +kubebuilder:printcolumn:name="Parallel",type=integer,JSONPath=`.spec.limits.parallelMigrationsPerCluster`
// +kubebuilder:printcolumn:name="Outbound/Node",type=integer,JSONPath=`.spec.limits.parallelOutboundMigrationsPerNode`
// +kubebuilder:printcolumn:name="Inbound/Node",type=integer,JSONPath=`.spec.limits.parallelInboundMigrationsPerNode`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MigrationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec MigrationPolicySpec `json:"spec"`
}

// MigrationPolicySpec selects pods and says what their migrations may do.
type MigrationPolicySpec struct {
	// NamespaceSelector selects the namespaces whose pods this policy
	// governs; empty selects every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// PodSelector selects, within those namespaces, the pods this policy
	// governs; empty selects every pod.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// Allowed narrows what the governed migrations may use. A list left
	// empty allows everything the manager itself allows.
	// +optional
	Allowed *MigrationAllowances `json:"allowed,omitempty"`
	// Limits bound how many migrations run at once and for how long.
	// +optional
	Limits *MigrationLimits `json:"limits,omitempty"`
	// Defaults are the settings a governed migration inherits where its
	// own spec leaves them out.
	// +optional
	Defaults *MigrationDefaults `json:"defaults,omitempty"`
	// EvictionStrategy is what an eviction of a governed pod (kubectl
	// drain, the cluster autoscaler) does; a pod's own label
	// migration.ms2m.io/on-eviction overrides it. Default None.
	// +optional
	EvictionStrategy EvictionStrategy `json:"evictionStrategy,omitempty"`
}

// EvictionStrategy is what evicting a pod does.
// +kubebuilder:validation:Enum=None;Migrate;MigrateOrEvict
type EvictionStrategy string

const (
	// EvictionNone: the pod is evicted as usual.
	EvictionNone EvictionStrategy = "None"
	// EvictionMigrate: the eviction is refused (429, so kubectl drain
	// retries) while ms2m migrates the pod off its node; it succeeds once
	// the pod has moved. A pod whose migration failed stays, and the
	// refusal says why.
	EvictionMigrate EvictionStrategy = "Migrate"
	// EvictionMigrateOrEvict: as Migrate, but a pod whose migration
	// failed is evicted as usual (an Event on the pod says why).
	EvictionMigrateOrEvict EvictionStrategy = "MigrateOrEvict"
)

// LabelOnEviction on a pod chooses its EvictionStrategy over its policy's.
const LabelOnEviction = "migration.ms2m.io/on-eviction"

// MigrationAllowances are the techniques and destinations a policy allows.
type MigrationAllowances struct {
	// Strategies a migration may resolve to (ShadowPod, Sequential).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.all(s, s == 'ShadowPod' || s == 'Sequential')",message="allowed.strategies lists what a plan resolves to: ShadowPod or Sequential"
	Strategies []MigrationStrategy `json:"strategies,omitempty"`
	// MemoryTechniques a migration may resolve to.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:XValidation:rule="self.all(t, t != 'Auto')",message="allowed.memoryTechniques lists what a plan resolves to (StopAndCopy, Stream, PostCopy, PreCopy), never Auto"
	MemoryTechniques []MemoryTechnique `json:"memoryTechniques,omitempty"`
	// TransferModes a migration may use.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	TransferModes []TransferMode `json:"transferModes,omitempty"`
	// Handoffs a migration may resolve to.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.all(h, h != 'Auto')",message="allowed.handoffs lists what a plan resolves to (Replay, Handoff), never Auto"
	Handoffs []Handoff `json:"handoffs,omitempty"`
	// CheckpointRegistries are the registry hosts ("host" or "host:port")
	// a Registry transfer may push the checkpoint (the pod's whole memory)
	// to. Within the manager's --allowed-registries: a registry the
	// manager refuses stays refused.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	CheckpointRegistries []string `json:"checkpointRegistries,omitempty"`
	// BrokerHosts are the broker hosts ("host" or "host:port") a migration
	// may have the manager connect to, management API included. Within
	// the manager's --allowed-broker-hosts.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	BrokerHosts []string `json:"brokerHosts,omitempty"`
}

// MigrationLimits bound the governed migrations. Parallelism counts every
// running migration of the cluster, whichever policy governs it: a
// migration waits in Pending, saying why, while starting it would exceed a
// limit of its own policy.
type MigrationLimits struct {
	// ParallelMigrationsPerCluster is how many migrations may run in the
	// cluster at once.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ParallelMigrationsPerCluster *int32 `json:"parallelMigrationsPerCluster,omitempty"`
	// ParallelOutboundMigrationsPerNode is how many migrations may run out
	// of one node at once.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ParallelOutboundMigrationsPerNode *int32 `json:"parallelOutboundMigrationsPerNode,omitempty"`
	// ParallelInboundMigrationsPerNode is how many migrations may run into
	// one node at once.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ParallelInboundMigrationsPerNode *int32 `json:"parallelInboundMigrationsPerNode,omitempty"`
	// CompletionTimeoutPerGiB bounds a migration's total time in proportion
	// to its container's memory limit (or request), whole GiB rounded up:
	// 150s per GiB gives a 512Mi container 150s. It can only shorten the
	// migration's own timeouts.total. A container with neither a limit
	// nor a request keeps its total timeout, and its plan says so.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive duration such as 90s, 5m or 1h30m"
	CompletionTimeoutPerGiB *metav1.Duration `json:"completionTimeoutPerGiB,omitempty"`
	// BandwidthPerMigration bounds the bytes per second one migration's
	// checkpoint takes over the network: the archive a Direct transfer
	// sends, the image a Registry transfer pushes and the target pulls
	// ("64Mi" is 64 MiB/s). Memory pages that move while the workload is
	// frozen or waits for them (Stream, PostCopy) are not bounded: slowing
	// them would lengthen the freeze.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be a positive number of bytes per second, such as 64Mi"
	BandwidthPerMigration *resource.Quantity `json:"bandwidthPerMigration,omitempty"`
}

// MigrationDefaults are the spec fields a governed migration inherits where
// it sets none; each has the meaning of the StatefulMigration field of the
// same name.
type MigrationDefaults struct {
	// +optional
	MigrationStrategy MigrationStrategy `json:"migrationStrategy,omitempty"`
	// +optional
	TransferMode TransferMode `json:"transferMode,omitempty"`
	// +optional
	CheckpointEngine CheckpointEngine `json:"checkpointEngine,omitempty"`
	// +optional
	Handoff Handoff `json:"handoff,omitempty"`
	// +optional
	MemoryTechnique MemoryTechnique `json:"memoryTechnique,omitempty"`
	// +optional
	ReplayMode ReplayMode `json:"replayMode,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	ReplayCutoffSeconds int32 `json:"replayCutoffSeconds,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+$')",message="checkpointImageRepository must be a repository without tag or digest, like registry.example.com/ms2m/checkpoints"
	CheckpointImageRepository string `json:"checkpointImageRepository,omitempty"`
	// Timeouts a migration inherits field by field.
	// +optional
	Timeouts *MigrationTimeouts `json:"timeouts,omitempty"`
}

// MigrationPolicyList is a list of MigrationPolicies.
// +kubebuilder:object:root=true
type MigrationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MigrationPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MigrationPolicy{}, &MigrationPolicyList{})
}
