// Package agentapi is the contract between the controller and the node
// agents: what the controller asks a node to do (checkpoint a container,
// move the checkpoint, clean up) and how the node reports back.
//
// Node work is asynchronous and idempotent by operation ID (derived from
// the migration): the controller calls the same method again to poll, a
// restarted controller finds the operation where the agent left it, and a
// repeated request never checkpoints twice.
package agentapi

import (
	"context"
	"errors"
	"time"
)

// OpState is the state of a node operation.
type OpState string

const (
	OpRunning   OpState = "Running"
	OpSucceeded OpState = "Succeeded"
	OpFailed    OpState = "Failed"
)

// CheckpointEngine names how an agent dumps a container.
type CheckpointEngine string

const (
	// EngineRunc: the agent runs the node's runc (and through it CRIU)
	// on the container itself: only CRIU's own freeze, and the container
	// can be held frozen after its dump. Its archive holds what ms2m's
	// runtime handler restores (CRIU images and the root file system's
	// changes), not a checkpoint image a runtime restores by itself.
	EngineRunc CheckpointEngine = "runc"
	// EngineKubelet: the kubelet's checkpoint API (the runtime pauses the
	// container for the dump and the archive, and resumes it).
	EngineKubelet CheckpointEngine = "kubelet"
)

// CheckpointRequest asks the source node to checkpoint a container.
type CheckpointRequest struct {
	// ID names the operation and the checkpoint (unique per migration).
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	PodUID    string `json:"podUID"`
	Container string `json:"container"`
	// ContainerID is the runtime's ID of the container, as the pod's
	// status gives it without its scheme ("containerd://"). The agent
	// checks that it is that pod's container before it touches it.
	ContainerID string `json:"containerID,omitempty"`
	// Engine is how to dump it ("" is EngineKubelet).
	Engine CheckpointEngine `json:"engine,omitempty"`
	// Hold leaves the container frozen after its dump (Sequential with
	// EngineRunc): it applies and acknowledges nothing more, so its queue
	// keeps, in order, everything the checkpoint does not hold. Cleanup of
	// the checkpoint thaws a container still held (a rolled-back
	// migration); a completed one deleted it.
	Hold bool `json:"hold,omitempty"`
	// PagesTo asks for a lazy dump (post-copy, EngineRunc): everything but
	// the memory pages goes into the archive, and the source agent serves
	// the pages to the agent of this node only. The container stays
	// frozen while it does, and ends once that agent has them all, unless
	// PagesFromDump: then the container is dumped whole and runs on (a
	// ShadowPod source), and the pages are served from the dump.
	PagesTo       string `json:"pagesTo,omitempty"`
	PagesFromDump bool   `json:"pagesFromDump,omitempty"`
	// StreamTo sends the memory pages, as CRIU dumps them, to the page
	// server of this node's agent (Stream, EngineRunc), which the manager
	// told to expect them (ExpectRequest.Pages); the archive holds the
	// rest.
	StreamTo string `json:"streamTo,omitempty"`
	// Others are more containers of the same pod (EngineRunc, neither
	// PagesTo nor StreamTo), dumped in the same cut: all are paused before
	// the first is dumped and resumed, or held with Hold, after the last.
	// The archive holds each under containers/<name>.
	Others []ContainerRef `json:"others,omitempty"`
}

// ContainerRef names a container of the request's pod: its name and the
// runtime's ID for it, which the agent checks belong together.
type ContainerRef struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
}

// CheckpointResult describes a finished checkpoint.
type CheckpointResult struct {
	// Archive is the checkpoint archive's path on the source node.
	Archive   string    `json:"archive"`
	SizeBytes int64     `json:"sizeBytes"`
	CreatedAt time.Time `json:"createdAt"`
	// Freeze is how long the container was frozen (held: until the dump
	// was written; it stays frozen).
	Freeze time.Duration `json:"freeze"`
	// FreezeSteps says where the freeze went, step by step ("start-up"
	// first when it was outside the freeze: ms2m's freeze hook).
	FreezeSteps string `json:"freezeSteps,omitempty"`
	// Engine is the engine that dumped it; Held whether the container
	// was left frozen.
	Engine CheckpointEngine `json:"engine,omitempty"`
	Held   bool             `json:"held,omitempty"`
	// ContainerID is the runtime's ID of the container dumped.
	ContainerID string `json:"containerID,omitempty"`
	// OtherContainerIDs are the runtime's IDs of the request's Others,
	// held with the container when Held.
	OtherContainerIDs []string `json:"otherContainerIDs,omitempty"`
	// LazyPages: the archive holds no memory pages; the source agent
	// serves them to the agent of the request's PagesTo.
	LazyPages bool `json:"lazyPages,omitempty"`
	// StreamedBytes is what went to the page server of the request's
	// StreamTo; the archive holds no memory pages.
	StreamedBytes int64 `json:"streamedBytes,omitempty"`
}

// HeldContainers are the runtime IDs of the containers a checkpoint left
// frozen: the dumped one and the others of its cut.
func (r CheckpointResult) HeldContainers() []string {
	if !r.Held || r.ContainerID == "" {
		return nil
	}
	return append([]string{r.ContainerID}, r.OtherContainerIDs...)
}

// TransferMode mirrors v1alpha1.TransferMode on the wire.
type TransferMode string

const (
	TransferRegistry TransferMode = "Registry"
	TransferDirect   TransferMode = "Direct"
)

// TransferRequest asks the source node to move a checkpoint to the target
// node so its runtime can restore it.
type TransferRequest struct {
	ID           string       `json:"id"`
	CheckpointID string       `json:"checkpointID"`
	Mode         TransferMode `json:"mode"`
	// Repository receives the checkpoint image in Registry mode.
	Repository string `json:"repository,omitempty"`
	// TargetNode receives the checkpoint in Direct mode.
	TargetNode string `json:"targetNode"`
	// Container is the checkpointed container's name (image annotation).
	Container string `json:"container"`
	// BytesPerSecond bounds the rate at which the archive is sent or
	// pushed (0: unbounded).
	BytesPerSecond int64 `json:"bytesPerSecond,omitempty"`
	// EncryptionKey, when set, is the checkpoint's key: the archive is
	// encrypted with it (internal/ckptcrypt) before it leaves the node.
	// Never logged, never stored.
	EncryptionKey []byte `json:"encryptionKey,omitempty"`
}

// TransferResult says where the target's runtime finds the checkpoint.
type TransferResult struct {
	// Image is the reference the target pod uses.
	Image string `json:"image"`
	// Digest of the image, when known.
	Digest string `json:"digest,omitempty"`
	// Seal is the source agent's (see Seal).
	Seal *Seal `json:"seal,omitempty"`
}

// ExpectRequest announces a Direct transfer to its target.
type ExpectRequest struct {
	// SourceNode is the node whose agent will send the archive.
	SourceNode string `json:"sourceNode"`
	// ForStaging: the target restores through ms2m's runtime handler,
	// which stages the archive itself; nothing is imported into the
	// node's runtime as an image.
	ForStaging bool `json:"forStaging,omitempty"`
	// Pages announces the memory pages of a Stream checkpoint instead of
	// an archive: the source node's agent sends them as CRIU dumps them
	// (PathIncoming+id+PathPagesSuffix), to a page server of this node's.
	Pages bool `json:"pages,omitempty"`
}

// Seal authenticates a checkpoint archive: the signature of the agent that
// took it, with its node's certificate, over the checkpoint's ID and the
// archive's digest. The target's agent restores nothing it cannot verify.
type Seal struct {
	// ArchiveDigest is the archive's sha256 ("sha256:<hex>").
	ArchiveDigest string `json:"archiveDigest"`
	// Signature is ECDSA (ASN.1) over sha256 of "ms2m checkpoint v1\n" +
	// ID + "\n" + ArchiveDigest.
	Signature []byte `json:"signature"`
	// Signer is the signing certificate (PEM).
	Signer []byte `json:"signer"`
}

// StageRequest asks the target node's agent to stage a checkpoint for the
// ms2m runtime handler: unpacked where the handler finds it when the
// kubelet creates the container pod/container in namespace.
type StageRequest struct {
	// ID is the checkpoint's ID (one staging per checkpoint).
	ID string `json:"id"`
	// Image is the checkpoint image (TransferResult.Image): a received
	// Direct checkpoint is staged from the archive the node already holds.
	Image     string `json:"image"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
	// SourceNode is where the checkpoint was taken; Seal must be its
	// agent's.
	SourceNode string `json:"sourceNode"`
	Seal       *Seal  `json:"seal,omitempty"`
	// LazyPages: the checkpoint holds no memory pages (post-copy). The
	// target's agent starts a lazy-pages daemon fed by the source node's
	// agent before it reports the checkpoint staged, and the restore takes
	// the pages from it as the restored process touches them.
	LazyPages bool `json:"lazyPages,omitempty"`
	// StreamedPages: the memory pages came apart from the archive, from
	// the source's CRIU to this node's page server (Stream); they are
	// staged with it.
	StreamedPages bool `json:"streamedPages,omitempty"`
	// Others are the pod's other containers whose checkpoints the archive
	// holds (CheckpointRequest.Others): each is staged for its own
	// container, and the request fails unless all of them are there.
	Others []string `json:"others,omitempty"`
	// BytesPerSecond bounds the rate at which a checkpoint image is
	// pulled from its registry (0: unbounded).
	BytesPerSecond int64 `json:"bytesPerSecond,omitempty"`
	// EncryptionKey, when set, decrypts the checkpoint (the transfer's
	// key); what does not decrypt is not staged.
	EncryptionKey []byte `json:"encryptionKey,omitempty"`
}

// PagesStatus is how far the memory of a lazy checkpoint has come to the
// target node.
type PagesStatus struct {
	// State is OpRunning while pages come, OpSucceeded once the target
	// has them all (the source then ends), OpFailed when the stream broke.
	State   OpState `json:"state"`
	Message string  `json:"message,omitempty"`
	// Bytes is what has arrived so far.
	Bytes int64 `json:"bytes"`
}

// RestoredStatus says whether the container restored from a checkpoint
// staged on a node runs, as the node's runtime handler recorded it when
// the runtime started it.
type RestoredStatus struct {
	Running     bool      `json:"running"`
	ContainerID string    `json:"containerID,omitempty"`
	Since       time.Time `json:"since,omitempty"`
}

// StageResult describes a staged checkpoint.
type StageResult struct {
	// Dir is where the checkpoint is staged on the node.
	Dir       string `json:"dir"`
	SizeBytes int64  `json:"sizeBytes"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
	// Others are the containers staged with it (StageRequest.Others).
	Others []string `json:"others,omitempty"`
}

// Progress counts bytes of a running operation.
type Progress struct {
	BytesDone  int64 `json:"bytesDone"`
	BytesTotal int64 `json:"bytesTotal"`
	// BytesPerSecond is the recent rate.
	BytesPerSecond int64 `json:"bytesPerSecond"`
}

// Operation is the state of one node operation.
type Operation[R any] struct {
	ID       string    `json:"id"`
	State    OpState   `json:"state"`
	Message  string    `json:"message,omitempty"`
	Progress Progress  `json:"progress"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Result   R         `json:"result,omitzero"`
}

// Client reaches the agent on a node.
type Client interface {
	// Ready returns the agent's report of its node; it fails when the node
	// has no working agent (ErrNoAgent) or the agent reports the node
	// cannot checkpoint/restore.
	Ready(ctx context.Context, node string) (ReadyReport, error)
	// Checkpoint starts or polls a checkpoint on the source node.
	Checkpoint(ctx context.Context, node string, req CheckpointRequest) (Operation[CheckpointResult], error)
	// Expect tells the target node's agent that the agent of sourceNode
	// will send it checkpoint id (a Direct transfer): it takes no archive
	// it was not told of, and each only once.
	Expect(ctx context.Context, node, id string, req ExpectRequest) error
	// Transfer starts or polls a transfer from the source node.
	Transfer(ctx context.Context, node string, req TransferRequest) (Operation[TransferResult], error)
	// Stage starts or polls the staging of a checkpoint on the target node
	// (restore through the ms2m runtime handler).
	Stage(ctx context.Context, node string, req StageRequest) (Operation[StageResult], error)
	// Withdraw tells the target node that the checkpoint will never be
	// staged there (its migration was given up before): a warm target's
	// container, which waits for it, fails at once instead of waiting out
	// the runtime handler's patience, and its pod can go.
	Withdraw(ctx context.Context, node, checkpointID string) error
	// Cleanup deletes everything the agent on node holds for the
	// checkpoint (archive, images); missing is fine. image, if set, is the
	// checkpoint image as the node's runtime may have pulled it.
	Cleanup(ctx context.Context, node, checkpointID, image string) error
	// EndHeld kills the container the checkpoint's dump left frozen on
	// node (Hold), without letting it run again, and returns once it has
	// stopped. A checkpoint that holds nothing is refused
	// (ErrNothingHeld); one already ended is no error.
	EndHeld(ctx context.Context, node, checkpointID string) error
	// ThawHeld lets the container the checkpoint's dump left frozen on
	// node run again (a ShadowPod source, once the Handoff has taken its
	// queue from it); one running already is no error. A checkpoint that
	// holds nothing is refused (ErrNothingHeld).
	ThawHeld(ctx context.Context, node, checkpointID string) error
	// Pages reports how far the memory of the lazy checkpoint staged on
	// node has come.
	Pages(ctx context.Context, node, checkpointID string) (PagesStatus, error)
	// Restored reports whether the container restored from the checkpoint
	// staged on node runs, by the word of node's runtime handler (before
	// the kubelet reports it). ErrNotRecorded: the node cannot say.
	Restored(ctx context.Context, node, checkpointID string) (RestoredStatus, error)
}

// ErrNotRecorded is returned by Restored when the node's agent keeps no
// record of restores (no runtime handler, or an agent that predates it):
// the kubelet's report of the container is all there is.
var ErrNotRecorded = errors.New("the node's agent does not record restored containers")

// ErrNothingHeld is returned by EndHeld for a checkpoint whose dump holds
// no container (or an agent that cannot end one).
var ErrNothingHeld = errors.New("the checkpoint holds no frozen container")

// ErrUnauthenticated begins the failure of a staging whose checkpoint's
// seal does not hold: nothing is restored from it.
var ErrUnauthenticated = errors.New("checkpoint not authenticated")

// ErrNoAgent is returned by Ready for a node without a ready agent.
var ErrNoAgent = errors.New("no ready ms2m agent on the node")

// ErrLeftBehind is returned by Cleanup when part of a checkpoint cannot be
// removed by any retry (a registry that refuses deletes): the caller says
// so instead of waiting for it.
var ErrLeftBehind = errors.New("part of the checkpoint cannot be removed")

// HTTP paths of the agent API.
const (
	PathReady       = "/v1/ready"
	PathCheckpoints = "/v1/checkpoints/"
	// PathHeldSuffix, after PathCheckpoints+id: the container the dump
	// holds frozen (DELETE ends it).
	PathHeldSuffix = "/held"
	// PathThawSuffix, after PathHeldSuffix: POST thaws it.
	PathThawSuffix = "/thaw"
	// PathPagesSuffix: after PathCheckpoints+id, the target's agent takes
	// the pages of a lazy checkpoint (an upgrade to UpgradePages); after
	// PathStages+id, the manager asks how far they have come; after
	// PathIncoming+id, the source's agent sends the pages of a Stream
	// checkpoint (an upgrade too).
	PathPagesSuffix = "/pages"
	// PathRunningSuffix, after PathStages+id: whether the container
	// restored from the checkpoint runs (RestoredStatus).
	PathRunningSuffix = "/running"
	// UpgradePages is the protocol a pages request upgrades to: CRIU's
	// page server protocol, carried over the agents' mutual TLS.
	UpgradePages  = "ms2m-criu-pages"
	PathTransfers = "/v1/transfers/"
	PathIncoming  = "/v1/incoming/"
	PathStages    = "/v1/stages/"
	// PathExpected, with the checkpoint ID: the manager announces a
	// Direct transfer to its target (ExpectRequest).
	PathExpected = "/v1/expected/"
	// QueryImage on a checkpoint's DELETE names its image as the node's
	// runtime may have pulled it.
	QueryImage = "image"
)

// HeaderWait, on a request that starts or polls an operation (checkpoint,
// transfer, stage), asks the agent to hold its answer while the operation
// runs, for up to this many milliseconds (at most MaxWait): the manager
// hears of the end as it happens instead of at its next look.
const HeaderWait = "X-Ms2m-Wait-Ms"

// MaxWait bounds HeaderWait.
const MaxWait = 2 * time.Second

// Headers of an incoming Direct transfer (the body is the archive).
const (
	HeaderContainer = "X-Ms2m-Container"
	HeaderSource    = "X-Ms2m-Source-Node"
)

// Incoming describes a checkpoint sent straight to the target node's agent.
type Incoming struct {
	ID        string
	Container string
	Source    string
	// ForStaging: keep the archive for staging only (see ExpectRequest).
	ForStaging bool
}

// ErrorBody is the agent's error response.
type ErrorBody struct {
	Error string `json:"error"`
}

// ReadyReport is what an agent says of its node.
type ReadyReport struct {
	Node  string `json:"node"`
	Ready bool   `json:"ready"`
	// Problems explain why the node cannot take part in migrations.
	Problems []string `json:"problems,omitempty"`
	// DirectReceive is whether Direct transfers can be received.
	DirectReceive bool `json:"directReceive"`
	// CRIUConfig is the node's runc CRIU configuration as found.
	CRIUConfig string `json:"criuConfig,omitempty"`
	// Restore says how checkpoints can be restored on the node.
	Restore RestoreCapabilities `json:"restore"`
	// Checkpoint says how containers can be dumped on the node.
	Checkpoint CheckpointCapabilities `json:"checkpoint"`
}

// CheckpointCapabilities are the ways a node's agent dumps a container.
// The kubelet's checkpoint API is always there; Runc when the agent can run
// the node's runc and CRIU itself.
type CheckpointCapabilities struct {
	Runc       bool   `json:"runc"`
	RuncReason string `json:"runcReason,omitempty"`
	// Kubelet: the agent dumps through its kubelet's checkpoint API (an
	// install's opt-in: it needs create nodes/checkpoint, which RBAC
	// grants for every node). KubeletReason says why or why not.
	Kubelet       bool   `json:"kubelet,omitempty"`
	KubeletReason string `json:"kubeletReason,omitempty"`
	// LazyPages: the node can take part in a post-copy migration, as its
	// source (CRIU serves a lazy dump) and as its target (userfaultfd, a
	// lazy-pages daemon). LazyPagesReason says why or why not.
	LazyPages       bool   `json:"lazyPages,omitempty"`
	LazyPagesReason string `json:"lazyPagesReason,omitempty"`
	// DirtyTracking: the kernel tracks dirty memory (soft-dirty), which
	// pre-copy needs. DirtyTrackingReason says why or why not.
	DirtyTracking       bool   `json:"dirtyTracking,omitempty"`
	DirtyTrackingReason string `json:"dirtyTrackingReason,omitempty"`
	// FreezeHook: runc's CRIU configuration runs ms2m's freeze hook, so a
	// runc dump freezes its container only once runc and CRIU have
	// started (shorter freezes). FreezeHookReason says why or why not.
	FreezeHook       bool   `json:"freezeHook,omitempty"`
	FreezeHookReason string `json:"freezeHookReason,omitempty"`
}

// RestoreCapabilities are the ways a node's runtime restores a checkpoint.
type RestoreCapabilities struct {
	// Runtime is the container runtime and its version ("containerd 2.4.2").
	Runtime string `json:"runtime,omitempty"`
	// CheckpointImage: the runtime restores a checkpoint image given as a
	// container's image, inside CreateContainer (containerd before 2.4,
	// unless switched off; CRI-O).
	CheckpointImage       bool   `json:"checkpointImage"`
	CheckpointImageReason string `json:"checkpointImageReason,omitempty"`
	// RuntimeHandler is the runtime handler name of ms2m's runtime on the
	// node ("" without), which restores checkpoints staged by the agent.
	RuntimeHandler       string `json:"runtimeHandler,omitempty"`
	RuntimeHandlerReason string `json:"runtimeHandlerReason,omitempty"`
}
