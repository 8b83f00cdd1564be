package controller_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/render"
	"github.com/ms2m/ms2m/internal/staging"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// nodeSim plays the node side, which envtest lacks: the agents and the
// kubelets. Everything else is real: the API server, the controller, the
// broker, and the workloads, which are SDK consumers running in this
// process. A "checkpoint" is the consumer's snapshot (taken between two
// messages, as a CRIU freeze would), a "restore" a new consumer started
// from it, in restored mode, under the target pod's identity.
const (
	imageConsumer  = "sim/consumer:1"
	imageNoSuchRef = "sim/does-not-exist"
)

type nodeSim struct {
	t        *testing.T
	c        client.Client
	ns       string
	amqpURL  string
	queue    string
	delay    time.Duration
	prefetch int
	identity string

	// hmu guards holds alone: workload handlers consult it while the
	// agent side may wait for them (a snapshot waits for the message
	// being applied).
	hmu        sync.Mutex
	mu         sync.Mutex
	agents     map[string]bool
	running    map[string]*simPod // by pod UID
	images     map[string]sdk.Snapshot
	ops        map[string]time.Time // operation ID → when it finished
	snapshots  map[string]int       // checkpoint ID → snapshots taken
	cleanups   map[string]int       // node → cleanup calls
	holds      map[string]chan struct{}
	transferTo map[string]string // checkpoint ID → image to hand out instead
	// paced: checkpoint ID → the rate its transfer was bounded to.
	paced map[string]int64
	// keys: checkpoint ID → the encryption keys its transfer and its
	// staging were given, in that order.
	keys        map[string][][]byte
	createdPods map[string][]string
	// badRestore: restores into these pod names fail as a missing image.
	badRestore map[string]bool
	// checkpointImageOnly: these nodes lack ms2m's runtime handler and
	// restore checkpoint images themselves (containerd 2.1).
	checkpointImageOnly map[string]bool
	// noRestore: these nodes restore in no way (containerd 2.4 without
	// the handler).
	noRestore map[string]bool
	// staged: what each node's agent staged for the runtime handler, by
	// node/namespace/pod/container; a restore claims it once.
	staged   map[string]sdk.Snapshot
	stageOps map[string]bool // checkpoint ID → staged once
	claimed  map[string]bool // checkpoint ID → restored once
	// runningFrom: checkpoint ID → when the runtime handler started the
	// container restored from it (what a node's agent reports).
	runningFrom map[string]time.Time
	// kubeletLag delays the kubelet's report of a container the runtime
	// handler restored (its next look at the runtime, up to a second on a
	// node: PLEG's relist).
	kubeletLag time.Duration
	// reportedRunning: pod UID → when the kubelet reported it running
	// after kubeletLag.
	reportedRunning map[string]time.Time
	// kubeletOnly: these nodes' agents cannot dump with runc (the
	// kubelet's checkpoint API alone); the others can, and hold.
	kubeletOnly map[string]bool
	// held: checkpoint ID → the pod its dump left frozen.
	heldPods map[string]*simPod
	// engines: checkpoint ID → the engine that dumped it.
	engines map[string]agentapi.CheckpointEngine
	// staleReady plays a kubelet that has not synced a target since its
	// cutover gate opened: it never folds the gate into Ready, and once
	// writes back the Ready=False it computed before (its status
	// manager's periodic reconcile) over the Ready ms2m set.
	staleReady bool
	// confirmLag delays the kubelet's own Ready of a target whose cutover
	// gate opened (its next sync of the pod, after a PLEG relist).
	confirmLag time.Duration
	wroteBack  map[string]bool // pod UID → stale Ready written
	endedHeld  int             // EndHeld calls
	// exited: pods whose workload crashed; RestartPolicy Never, so they
	// are never started again.
	exited map[string]bool
	// Post-copy. noLazyPages: these nodes can take no part in it. pages:
	// checkpoint ID → the pages of a lazy dump, which come pageDelay
	// after its target runs, or, with losePages, never: the target then
	// stops as a process faulting on a page that never comes.
	noLazyPages map[string]bool
	pages       map[string]*simPages
	pageDelay   time.Duration
	losePages   bool
	// violations: what the controller did that a real node would have
	// paid for with lost state (a post-copy source ended before its
	// target had every page).
	violations []string
	// Stream: checkpoint ID → the source node whose pages the target
	// node's agent was told to expect, and the checkpoints whose pages
	// went to their target as they were dumped.
	expectedPages map[string]string
	streamed      map[string]bool
	// withdrawn: checkpoints the manager said will never be staged. A
	// warm target's create waits for its checkpoint in the runtime
	// handler, and the kubelet deletes its pod only once that create has
	// failed: at once if withdrawn, else after stageWait.
	withdrawn map[string]bool
	// lost: nodes whose kubelet is gone: their pods' status stays as it
	// was, and no deletion of them is ever confirmed.
	lost map[string]bool
}

// stageWait stands for the runtime handler's patience (100 s on a node),
// longer than any test waits.
const stageWait = 2 * migrationTimeout

type simPages struct {
	target, sourceUID string
	held              bool // from a frozen source (Sequential), not a dump
	restored          time.Time
	pod               *simPod // the target's workload
	done, lost        bool
}

type simPod struct {
	name     string
	consumer *sdk.Consumer
	cancel   context.CancelFunc
	done     chan struct{}
	restored *sdk.Snapshot
	// frozen is closed by thaw; nil while the pod runs. A frozen
	// workload applies nothing and acknowledges nothing (the cgroup
	// freezer), until it is thawed or killed.
	fmu      sync.Mutex
	frozen   chan struct{}
	applying int // messages between enter and leave
	// conns are the workload's broker connections, which a SIGKILL drops
	// (sigkill) before the workload can do anything on them.
	conns []net.Conn
	// checkpointed: a checkpoint of this pod was taken.
	checkpointed atomic.Bool
	mu           sync.Mutex
	applied      []int64
	// producers[i] is the producer of applied[i]
	producers []string
}

func newNodeSim(t *testing.T, c client.Client, ns, amqpURL, queue string) *nodeSim {
	s := &nodeSim{t: t, c: c, ns: ns, amqpURL: amqpURL, queue: queue, prefetch: 10, identity: t.TempDir(),
		agents: map[string]bool{"node-a": true, "node-b": true}, running: map[string]*simPod{},
		images: map[string]sdk.Snapshot{}, ops: map[string]time.Time{}, snapshots: map[string]int{},
		cleanups: map[string]int{}, holds: map[string]chan struct{}{}, transferTo: map[string]string{}, paced: map[string]int64{}, keys: map[string][][]byte{},
		createdPods: map[string][]string{}, badRestore: map[string]bool{}, checkpointImageOnly: map[string]bool{}, noRestore: map[string]bool{},
		staged: map[string]sdk.Snapshot{}, stageOps: map[string]bool{}, claimed: map[string]bool{}, runningFrom: map[string]time.Time{}, reportedRunning: map[string]time.Time{},
		kubeletOnly: map[string]bool{}, heldPods: map[string]*simPod{}, engines: map[string]agentapi.CheckpointEngine{},
		wroteBack: map[string]bool{}, exited: map[string]bool{}, noLazyPages: map[string]bool{}, pages: map[string]*simPages{},
		expectedPages: map[string]string{}, streamed: map[string]bool{}, withdrawn: map[string]bool{}, lost: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.kubelet(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.mu.Lock()
		pods := s.running
		s.running = map[string]*simPod{}
		s.mu.Unlock()
		for _, p := range pods {
			p.cancel()
			<-p.done
		}
	})
	return s
}

// hold makes the named step wait until release (checkpoint, transfer,
// restore, replay, stop-source).
func (s *nodeSim) hold(step string) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.holds[step] = make(chan struct{})
}

func (s *nodeSim) release(step string) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if ch, ok := s.holds[step]; ok {
		close(ch)
		delete(s.holds, step)
	}
}

// waitHeld blocks while step is held, or until ctx ends.
func (s *nodeSim) waitHeld(ctx context.Context, step string) {
	s.hmu.Lock()
	ch, ok := s.holds[step]
	s.hmu.Unlock()
	if !ok {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

func (s *nodeSim) held(step string) bool {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	_, ok := s.holds[step]
	return ok
}

// ---- agents ----

func (s *nodeSim) Ready(_ context.Context, node string) (agentapi.ReadyReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.agents[node] {
		return agentapi.ReadyReport{}, agentapi.ErrNoAgent
	}
	rep := agentapi.ReadyReport{Node: node, Ready: true, Restore: agentapi.RestoreCapabilities{Runtime: "containerd 2.4.2",
		CheckpointImageReason: "containerd 2.4.2 no longer restores checkpoint images",
		RuntimeHandler:        "ms2m", RuntimeHandlerReason: "runtime handler ms2m (simulated)"}}
	rep.Checkpoint = agentapi.CheckpointCapabilities{Runc: true, RuncReason: "the agent dumps with runc (simulated)",
		LazyPages: !s.noLazyPages[node], LazyPagesReason: "userfaultfd and CRIU (simulated)",
		Kubelet: true, KubeletReason: "the kubelet's checkpoint API (simulated)"}
	if s.noLazyPages[node] {
		rep.Checkpoint.LazyPagesReason = "no userfaultfd (simulated)"
	}
	if s.kubeletOnly[node] {
		rep.Checkpoint = agentapi.CheckpointCapabilities{RuncReason: "no runc found on the host (simulated)", Kubelet: true}
	}
	if s.noRestore[node] {
		rep.Restore.RuntimeHandler, rep.Restore.RuntimeHandlerReason = "", "ms2m's runtime handler is not installed on this node"
	}
	if s.checkpointImageOnly[node] {
		rep.Restore = agentapi.RestoreCapabilities{Runtime: "containerd 2.1.9", CheckpointImage: true,
			CheckpointImageReason: "containerd 2.1.9 restores checkpoint images", RuntimeHandlerReason: "not installed"}
	}
	return rep, nil
}

func (s *nodeSim) Stage(_ context.Context, node string, req agentapi.StageRequest) (agentapi.Operation[agentapi.StageResult], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op := agentapi.Operation[agentapi.StageResult]{ID: req.ID, State: agentapi.OpRunning}
	if s.held("stage") {
		return op, nil
	}
	if len(s.keys[req.ID]) == 1 {
		s.keys[req.ID] = append(s.keys[req.ID], req.EncryptionKey)
	}
	snap, ok := s.images[req.Image]
	if !ok {
		op.State, op.Message = agentapi.OpFailed, "no checkpoint image "+req.Image
		return op, nil
	}
	if req.StreamedPages != s.streamed[req.ID] {
		// a real agent stages no images without their pages
		op.State, op.Message = agentapi.OpFailed, fmt.Sprintf("stream: staging with streamed pages %v, but the pages of checkpoint %s streamed: %v", req.StreamedPages, req.ID, s.streamed[req.ID])
		return op, nil
	}
	// Like the agent: one staging per checkpoint, ever.
	if !s.stageOps[req.ID] {
		s.stageOps[req.ID] = true
		s.staged[node+"/"+req.Namespace+"/"+req.Pod+"/"+req.Container] = snap
	}
	op.State = agentapi.OpSucceeded
	op.Result = agentapi.StageResult{Dir: "/var/lib/ms2m/staging/" + req.Pod, SizeBytes: 4096, Namespace: req.Namespace, Pod: req.Pod, Container: req.Container}
	return op, nil
}

func (s *nodeSim) Checkpoint(_ context.Context, node string, req agentapi.CheckpointRequest) (agentapi.Operation[agentapi.CheckpointResult], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op := agentapi.Operation[agentapi.CheckpointResult]{ID: req.ID, State: agentapi.OpRunning}
	if s.held("checkpoint") {
		return op, nil
	}
	if s.agents["fail-checkpoint"] {
		op.State, op.Message = agentapi.OpFailed, "kubelet refused the checkpoint: HTTP 500"
		return op, nil
	}
	if _, done := s.ops["ckpt/"+req.ID]; !done {
		p := s.running[req.PodUID]
		if p == nil {
			op.State, op.Message = agentapi.OpFailed, fmt.Sprintf("pod %s (uid %s) does not run on %s", req.Pod, req.PodUID, node)
			return op, nil
		}
		if req.StreamTo != "" && (req.Engine != agentapi.EngineRunc || s.expectedPages[req.ID] != node) {
			op.State, op.Message = agentapi.OpFailed, fmt.Sprintf("sending the pages of checkpoint %s to node %s: 403: the manager announced no pages from node %s", req.ID, req.StreamTo, node)
			return op, nil
		}
		if req.Engine == agentapi.EngineRunc && (s.kubeletOnly[node] || req.ContainerID != simContainerID(req.PodUID)) {
			op.State, op.Message = agentapi.OpFailed, fmt.Sprintf("runc engine on %s: container %q refused (kubelet only: %v)", node, req.ContainerID, s.kubeletOnly[node])
			return op, nil
		}
		s.mu.Unlock()
		if req.Hold {
			p.freeze()
		}
		snap := p.consumer.Snapshot()
		p.checkpointed.Store(true)
		s.mu.Lock()
		if req.Hold {
			s.heldPods[req.ID] = p
		}
		s.engines[req.ID] = req.Engine
		if req.PagesTo != "" {
			s.pages[req.ID] = &simPages{target: req.PagesTo, sourceUID: req.PodUID, held: req.Hold && !req.PagesFromDump}
		}
		s.streamed[req.ID] = req.StreamTo != ""
		s.images["ckpt/"+req.ID] = snap
		s.snapshots[req.ID]++
		s.ops["ckpt/"+req.ID] = time.Now()
	}
	op.State = agentapi.OpSucceeded
	op.Result = agentapi.CheckpointResult{Archive: "/var/lib/ms2m/" + req.ID + ".tar", SizeBytes: 4096, CreatedAt: s.ops["ckpt/"+req.ID], Freeze: 5 * time.Millisecond,
		Engine: s.engines[req.ID], Held: s.heldPods[req.ID] != nil, ContainerID: req.ContainerID, LazyPages: s.pages[req.ID] != nil}
	if s.streamed[req.ID] {
		op.Result.StreamedBytes = 1 << 20
	}
	return op, nil
}

func (s *nodeSim) Transfer(_ context.Context, _ string, req agentapi.TransferRequest) (agentapi.Operation[agentapi.TransferResult], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op := agentapi.Operation[agentapi.TransferResult]{ID: req.ID, State: agentapi.OpRunning,
		Progress: agentapi.Progress{BytesTotal: 4096, BytesDone: 1024, BytesPerSecond: 1 << 20}}
	s.paced[req.CheckpointID] = req.BytesPerSecond
	if len(s.keys[req.CheckpointID]) == 0 {
		s.keys[req.CheckpointID] = append(s.keys[req.CheckpointID], req.EncryptionKey)
	}
	if s.held("transfer") {
		return op, nil
	}
	snap, ok := s.images["ckpt/"+req.CheckpointID]
	if !ok {
		op.State, op.Message = agentapi.OpFailed, "no checkpoint "+req.CheckpointID
		return op, nil
	}
	image := req.Repository + ":" + req.CheckpointID
	if req.Mode == agentapi.TransferDirect {
		image = "localhost/ms2m/checkpoint:" + req.CheckpointID
	}
	if alt, ok := s.transferTo["*"]; ok {
		image = alt
	} else {
		s.images[image] = snap
	}
	op.State, op.Progress.BytesDone = agentapi.OpSucceeded, 4096
	op.Result = agentapi.TransferResult{Image: image}
	return op, nil
}

// Withdraw implements agentapi.Client.
func (s *nodeSim) Withdraw(_ context.Context, node, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.agents[node] {
		return fmt.Errorf("%w on %s", agentapi.ErrNoAgent, node)
	}
	s.withdrawn[id] = true
	return nil
}

// Expect implements agentapi.Client: the simulated target takes any
// archive (the real agent's check is tested in internal/agent).
func (s *nodeSim) Expect(_ context.Context, node, id string, req agentapi.ExpectRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.agents[node] {
		return fmt.Errorf("%w on %s", agentapi.ErrNoAgent, node)
	}
	if req.Pages {
		s.expectedPages[id] = req.SourceNode
	}
	return nil
}

func (s *nodeSim) Cleanup(_ context.Context, node, id, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.agents[node] {
		return fmt.Errorf("%w on %s", agentapi.ErrNoAgent, node)
	}
	s.cleanups[node]++
	if p := s.heldPods[id]; p != nil {
		p.thaw() // a rolled-back source serves again; a stopped one is gone
		delete(s.heldPods, id)
	}
	return nil
}

// ThawHeld lets the pod a dump left frozen run again; it stays held, so
// that EndHeld can still end it.
func (s *nodeSim) ThawHeld(_ context.Context, node, id string) error {
	s.mu.Lock()
	p := s.heldPods[id]
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: no checkpoint %s held on %s", agentapi.ErrNothingHeld, id, node)
	}
	p.thaw()
	return nil
}

// Restored implements agentapi.Client: the runtime handler's record of a
// container it restored and started.
func (s *nodeSim) Restored(_ context.Context, node, id string) (agentapi.RestoredStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checkpointImageOnly[node] || s.noRestore[node] {
		return agentapi.RestoredStatus{}, fmt.Errorf("%w (node %s has no runtime handler)", agentapi.ErrNotRecorded, node)
	}
	at, ok := s.runningFrom[id]
	if !ok {
		return agentapi.RestoredStatus{}, nil
	}
	return agentapi.RestoredStatus{Running: true, ContainerID: "sim-" + id, Since: at}, nil
}

// Pages implements agentapi.Client: the pages of a lazy dump come once
// its target runs, pageDelay later; with losePages the stream breaks
// instead, and the target stops where it faulted.
func (s *nodeSim) Pages(_ context.Context, node, id string) (agentapi.PagesStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pg := s.pages[id]
	if pg == nil || pg.target != node {
		return agentapi.PagesStatus{}, fmt.Errorf("node %s takes no pages of checkpoint %s", node, id)
	}
	switch {
	case pg.done:
		return agentapi.PagesStatus{State: agentapi.OpSucceeded, Bytes: 1 << 20}, nil
	case pg.lost:
		return agentapi.PagesStatus{State: agentapi.OpFailed, Bytes: 4096, Message: "criu lazy-pages: the page stream broke (simulated)"}, nil
	case pg.restored.IsZero():
		return agentapi.PagesStatus{State: agentapi.OpRunning}, nil
	case s.losePages:
		pg.lost = true
		s.mu.Unlock()
		pg.pod.freeze()
		s.mu.Lock()
		return agentapi.PagesStatus{State: agentapi.OpFailed, Bytes: 4096, Message: "criu lazy-pages: the page stream broke (simulated)"}, nil
	case time.Since(pg.restored) >= s.pageDelay:
		pg.done = true
		return agentapi.PagesStatus{State: agentapi.OpSucceeded, Bytes: 1 << 20}, nil
	}
	return agentapi.PagesStatus{State: agentapi.OpRunning, Bytes: 4096}, nil
}

// pagesOutstanding says which lazy dump of the pod still has pages to
// serve ("": none); a violation if the pod is ended now.
func (s *nodeSim) pagesOutstanding(podUID string, held bool) string {
	for id, pg := range s.pages {
		if pg.sourceUID == podUID && pg.held == held && !pg.done && !pg.lost {
			return id
		}
	}
	return ""
}

// EndHeld kills the pod a dump left frozen, as the runc engine does: its
// blocked handler fails and its deliveries go back to the queue in order.
func (s *nodeSim) EndHeld(_ context.Context, node, id string) error {
	s.mu.Lock()
	p := s.heldPods[id]
	delete(s.heldPods, id)
	s.endedHeld++
	if pg := s.pages[id]; pg != nil && pg.held && !pg.done && !pg.lost {
		s.violations = append(s.violations, fmt.Sprintf("the source held at checkpoint %s was ended before its target had every page", id))
	}
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: no checkpoint %s held on %s", agentapi.ErrNothingHeld, id, node)
	}
	p.sigkill()
	// Its pod is removed at once (grace 0): the simulated kubelet never
	// sees it terminating, so it is forgotten here, as the kubelet's
	// cleanup of an orphaned pod does. The controller marked it for
	// deletion first, and a kubelet never restarts a terminating pod's
	// container: a look at the pod from before that mark (the simulated
	// kubelet's queue is not ordered with EndHeld) must not start it
	// again as a fresh consumer.
	s.mu.Lock()
	for uid, r := range s.running {
		if r == p {
			delete(s.running, uid)
			s.exited[uid] = true
		}
	}
	s.mu.Unlock()
	return nil
}

// simContainerID is the runtime ID the simulated kubelet gives a pod's
// container.
func simContainerID(podUID string) string { return "sim-" + podUID }

// freeze stops the workload applying and acknowledging messages. Like
// the cgroup freezer it is atomic: once it returns, a message is either
// applied (in the snapshot taken next) or not begun; none is half-way.
func (p *simPod) freeze() {
	p.fmu.Lock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
	p.fmu.Unlock()
	for {
		p.fmu.Lock()
		busy := p.applying
		p.fmu.Unlock()
		if busy == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// enter begins applying a message once the workload is not frozen; false
// when it was killed meanwhile.
func (p *simPod) enter(ctx context.Context) bool {
	for {
		p.whileFrozen(ctx)
		if ctx.Err() != nil {
			return false
		}
		p.fmu.Lock()
		if p.frozen == nil {
			p.applying++
			p.fmu.Unlock()
			return true
		}
		p.fmu.Unlock()
	}
}

// leave ends applying a message: it is in the consumer's snapshot.
func (p *simPod) leave() {
	p.fmu.Lock()
	p.applying--
	p.fmu.Unlock()
}

func (p *simPod) thaw() {
	p.fmu.Lock()
	defer p.fmu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// sigkill ends the workload as SIGKILL does: its connections drop first,
// so it can neither acknowledge nor clean up anything on the broker (the
// SDK removes its control queue only when it is shut down).
func (p *simPod) sigkill() {
	p.fmu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.fmu.Unlock()
	p.cancel()
	<-p.done
}

// whileFrozen waits, in the workload, until it is thawed or killed.
func (p *simPod) whileFrozen(ctx context.Context) {
	p.fmu.Lock()
	ch := p.frozen
	p.fmu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// ---- kubelets ----

func (s *nodeSim) kubelet(ctx context.Context) {
	for ctx.Err() == nil {
		pods := &corev1.PodList{}
		if err := s.c.List(ctx, pods, client.InNamespace(s.ns)); err == nil {
			for i := range pods.Items {
				s.syncPod(ctx, &pods.Items[i])
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill ends the pod's workload, if it runs, as SIGKILL does (deleted with
// grace 0, or lost with its node).
func (s *nodeSim) kill(p *simPod, uid types.UID) {
	if p == nil {
		return
	}
	p.sigkill()
	s.mu.Lock()
	delete(s.running, string(uid))
	s.mu.Unlock()
}

func (s *nodeSim) syncPod(ctx context.Context, pod *corev1.Pod) {
	if pod.Spec.NodeName == "" {
		return
	}
	s.mu.Lock()
	p, lost := s.running[string(pod.UID)], s.lost[pod.Spec.NodeName]
	s.mu.Unlock()
	if lost {
		// The node died with its processes: their connections drop.
		s.kill(p, pod.UID)
		return
	}
	holdStop, holdRestore := s.held("stop-source"), s.held("restore")
	if !pod.DeletionTimestamp.IsZero() {
		if holdStop {
			return
		}
		if id := pod.Annotations[staging.AnnotationRestore]; id != "" && p == nil && pod.Spec.RuntimeClassName != nil {
			s.mu.Lock()
			waiting := !s.stageOps[id] && !s.withdrawn[id] && time.Since(pod.CreationTimestamp.Time) < stageWait
			s.mu.Unlock()
			if waiting {
				return // its create still waits for the checkpoint
			}
		}
		s.mu.Lock()
		if id := s.pagesOutstanding(string(pod.UID), false); id != "" {
			s.violations = append(s.violations, fmt.Sprintf("source %s was deleted before the target of checkpoint %s had every page from its dump", pod.Name, id))
		}
		s.mu.Unlock()
		// A frozen workload killed: its blocked handler fails, and the SDK
		// hands every delivery back in order by closing its channel, as
		// the broker does when a frozen process dies.
		s.kill(p, pod.UID)
		_ = s.c.Delete(ctx, pod, client.GracePeriodSeconds(0))
		return
	}
	if p != nil {
		s.mu.Lock()
		_, reported := s.reportedRunning[string(pod.UID)]
		unseen := s.kubeletLag > 0 && !reported && pod.Annotations[staging.AnnotationRestore] != ""
		s.mu.Unlock()
		if unseen {
			return // the kubelet has not looked at the runtime since the restore
		}
		if s.staleReady {
			s.writeBackStaleReady(ctx, pod)
			return
		}
		// The kubelet folds an opened readiness gate into Ready, and
		// writes its own over the Ready ms2m set at cutover.
		if render.CutoverOpen(pod) && (!podIsReady(pod) || readyByMS2M(pod)) {
			if s.confirmLag > 0 {
				// at its next sync, confirmLag on; nothing before
				time.AfterFunc(s.confirmLag, func() { s.confirmReady(ctx, client.ObjectKeyFromObject(pod), pod.UID) })
				return
			}
			s.confirmReady(ctx, client.ObjectKeyFromObject(pod), pod.UID)
		}
		return
	}
	s.mu.Lock()
	exited := s.exited[string(pod.UID)]
	s.mu.Unlock()
	if pod.Status.Phase == corev1.PodFailed || exited {
		return
	}
	image := pod.Spec.Containers[0].Image
	// The checkpoint image, not a label: a target handed back to its
	// StatefulSet loses ms2m's role label before the kubelet starts it.
	restore := pod.Annotations[render.AnnotationCheckpointImage] != ""
	if (restore || pod.Annotations[staging.AnnotationRestore] != "") && holdRestore {
		return
	}
	if pod.Annotations[staging.AnnotationRestore] != "" {
		// ms2m's runtime handler: the container claims what the node's
		// agent staged for it, once.
		key := pod.Spec.NodeName + "/" + pod.Namespace + "/" + pod.Name + "/" + pod.Spec.Containers[0].Name
		id := pod.Annotations[staging.AnnotationRestore]
		s.mu.Lock()
		snap, staged := s.staged[key]
		delete(s.staged, key)
		claimed := s.claimed[id]
		if staged {
			s.claimed[id] = true
		}
		bad := s.badRestore[pod.Name]
		s.mu.Unlock()
		if !staged && !claimed && !bad && pod.Spec.RuntimeClassName != nil {
			return // a warm target: its create waits for the checkpoint
		}
		if !staged || bad || pod.Spec.RuntimeClassName == nil {
			s.setStatus(ctx, pod, corev1.PodFailed, false, &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 128, Reason: "StartError", Message: "ms2m-runtime: no checkpoint is staged for " + key}})
			return
		}
		p := s.launch(pod, &snap)
		if p == nil {
			return
		}
		s.mu.Lock()
		s.runningFrom[id] = time.Now()
		if pg := s.pages[id]; pg != nil {
			pg.restored, pg.pod = time.Now(), p
		}
		lag := s.kubeletLag
		s.mu.Unlock()
		running := &corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
		if lag <= 0 {
			s.setStatus(ctx, pod, corev1.PodRunning, true, running)
			return
		}
		time.AfterFunc(lag, func() {
			// the pod as it is by then (the controller may have written it)
			_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				fresh := &corev1.Pod{}
				if err := s.c.Get(ctx, client.ObjectKeyFromObject(pod), fresh); err != nil || fresh.UID != pod.UID || ctx.Err() != nil {
					return nil
				}
				kubeletStatus(fresh, corev1.PodRunning, true, running)
				if err := s.c.Status().Update(ctx, fresh); err != nil {
					return err
				}
				s.mu.Lock()
				s.reportedRunning[string(fresh.UID)] = time.Now()
				s.mu.Unlock()
				return nil
			})
		})
		return
	}
	s.mu.Lock()
	snap, known := s.images[image]
	known = known && !s.badRestore[pod.Name]
	s.mu.Unlock()
	if restore && !known {
		s.setStatus(ctx, pod, corev1.PodPending, false, &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "ErrImagePull", Message: "failed to pull image " + image + ": not found"}})
		return
	}
	if !restore && image != imageConsumer {
		return
	}
	var from *sdk.Snapshot
	if restore {
		from = &snap
	}
	s.run(ctx, pod, from)
}

// confirmReady writes the kubelet's own Ready over the one ms2m set when
// it opened the pod's cutover gate.
func (s *nodeSim) confirmReady(ctx context.Context, key client.ObjectKey, uid types.UID) {
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod := &corev1.Pod{}
		if err := s.c.Get(ctx, key, pod); err != nil || pod.UID != uid || ctx.Err() != nil || !render.CutoverOpen(pod) {
			return nil
		}
		if podIsReady(pod) && !readyByMS2M(pod) {
			return nil
		}
		setPodCondition(pod, corev1.PodReady, corev1.ConditionTrue)
		for i := range pod.Status.Conditions {
			if pod.Status.Conditions[i].Type == corev1.PodReady {
				pod.Status.Conditions[i].Reason, pod.Status.Conditions[i].Message = "", ""
			}
		}
		err := s.c.Status().Update(ctx, pod)
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			s.t.Errorf("kubelet status of %s: %v", pod.Name, err)
		}
		return err
	})
}

// kubeletStatus writes into pod what a kubelet reports of it.
func kubeletStatus(pod *corev1.Pod, phase corev1.PodPhase, ready bool, state *corev1.ContainerState) {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	pod.Status.Phase = phase
	pod.Status.PodIP = ""
	setPodCondition(pod, corev1.ContainersReady, cond)
	if len(pod.Spec.ReadinessGates) == 0 || render.CutoverOpen(pod) {
		setPodCondition(pod, corev1.PodReady, cond)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image, Ready: ready, State: *state,
		ContainerID: "sim://" + simContainerID(string(pod.UID))}}
}

// run starts the pod's workload and reports it running.
func (s *nodeSim) run(ctx context.Context, pod *corev1.Pod, from *sdk.Snapshot) *simPod {
	p := s.launch(pod, from)
	if p != nil {
		s.setStatus(ctx, pod, corev1.PodRunning, true, &corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}})
	}
	return p
}

// launch starts the pod's workload, not yet reported.
func (s *nodeSim) launch(pod *corev1.Pod, from *sdk.Snapshot) *simPod {
	p, err := s.start(pod, from)
	if err != nil {
		s.t.Errorf("starting %s: %v", pod.Name, err)
		return nil
	}
	s.mu.Lock()
	s.running[string(pod.UID)] = p
	s.createdPods[pod.Name] = append(s.createdPods[pod.Name], string(pod.UID))
	s.mu.Unlock()
	return p
}

// start runs the pod's workload: an SDK consumer whose identity files say
// which pod it is in.
func (s *nodeSim) start(pod *corev1.Pod, from *sdk.Snapshot) (*simPod, error) {
	dir := filepath.Join(s.identity, string(pod.UID))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for f, v := range map[string]string{"uid": string(pod.UID), "name": pod.Name, "namespace": pod.Namespace} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			return nil, err
		}
	}
	p := &simPod{name: pod.Name, restored: from, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := sdk.NewConsumer(sdk.Config{
		// A message applied as the freeze came stays unacknowledged
		// while frozen: the hook runs between its apply and its ack.
		Hooks: sdk.Hooks{Applied: func(sdk.Message, sdk.Snapshot) { p.leave(); p.whileFrozen(ctx) }},
		URL:   s.amqpURL, Queue: s.queue, Prefetch: s.prefetch, Restore: from,
		Identity: sdk.PodInfoFiles(dir), ConnectionName: "sim " + pod.Name,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		// A frozen process cannot reconnect either.
		Dial: func(network, addr string) (net.Conn, error) {
			p.whileFrozen(ctx)
			conn, err := (&net.Dialer{Timeout: 30 * time.Second}).DialContext(ctx, network, addr)
			if err == nil {
				p.fmu.Lock()
				p.conns = append(p.conns, conn)
				p.fmu.Unlock()
			}
			return conn, err
		},
		Handler: func(ctx context.Context, m sdk.Message) error {
			if !p.enter(ctx) {
				return ctx.Err() // killed while frozen: nothing applied
			}
			if s.delay > 0 {
				time.Sleep(s.delay)
			}
			if p.checkpointed.Load() && !m.Replayed {
				// A source held from stopping is stuck in its handler
				// after its checkpoint: it cannot let go of its queue
				// (RELEASE waits for what it was delivered), and is
				// deleted instead, which is held too.
				s.waitHeld(ctx, "stop-source")
				if ctx.Err() != nil {
					p.leave()
					return ctx.Err()
				}
			}
			if s.held("replay") && m.Replayed {
				p.leave()
				return fmt.Errorf("replay held by the test")
			}
			p.mu.Lock()
			p.applied = append(p.applied, m.Seq)
			p.producers = append(p.producers, m.Producer)
			p.mu.Unlock()
			return nil
		},
	})
	if err != nil {
		cancel()
		return nil, err
	}
	p.consumer = c
	p.cancel = cancel
	go func() { defer close(p.done); _ = c.Run(ctx) }()
	return p, nil
}

// writeBackStaleReady writes Ready=False over a Ready that ms2m set at
// cutover, once per pod, as a kubelet that cached the pod's status before
// its gate opened does.
func (s *nodeSim) writeBackStaleReady(ctx context.Context, pod *corev1.Pod) {
	s.mu.Lock()
	done := s.wroteBack[string(pod.UID)]
	s.mu.Unlock()
	if done || !render.CutoverOpen(pod) || !podIsReady(pod) {
		return
	}
	setPodCondition(pod, corev1.PodReady, corev1.ConditionFalse)
	if err := s.c.Status().Update(ctx, pod); err != nil {
		return // looked at again on the pod's next event
	}
	s.mu.Lock()
	s.wroteBack[string(pod.UID)] = true
	s.mu.Unlock()
}

func (s *nodeSim) setStatus(ctx context.Context, pod *corev1.Pod, phase corev1.PodPhase, ready bool, state *corev1.ContainerState) {
	kubeletStatus(pod, phase, ready, state)
	// a kubelet stopped with its test (ctx) may be cut off mid-write
	if err := s.c.Status().Update(ctx, pod); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		s.t.Errorf("kubelet status of %s: %v", pod.Name, err)
	}
}

func setPodCondition(p *corev1.Pod, t corev1.PodConditionType, st corev1.ConditionStatus) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			p.Status.Conditions[i].Status = st
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: st, LastTransitionTime: metav1.Now()})
}

// pod returns the running workload of the named pod.
func (s *nodeSim) pod(name string) *simPod {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.running {
		if p.name == name {
			return p
		}
	}
	return nil
}

// appliedBy is what the pod applied, per producer, in order.
func (p *simPod) appliedBy() map[string][]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]int64{}
	for i, seq := range p.applied {
		out[p.producers[i]] = append(out[p.producers[i]], seq)
	}
	return out
}

func (p *simPod) appliedSeqs() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.applied...)
}

// readyByMS2M: the pod's Ready is the one ms2m set at cutover, not yet
// confirmed by the kubelet.
func readyByMS2M(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Reason == "MigrationCutover"
		}
	}
	return false
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// crash kills the workload of a running pod, as the OOM killer would: the
// pod fails (RestartPolicy Never) and the kubelet says why.
func (s *nodeSim) crash(ctx context.Context, name string) {
	s.t.Helper()
	p := s.pod(name)
	if p == nil {
		s.t.Fatalf("crash: %s is not running", name)
	}
	p.sigkill()
	// setStatus gives up on a conflicting write (the controller may be
	// writing the pod's status too): write until it has landed.
	sdktest.Eventually(s.t, 10*time.Second, "the crashed pod Failed", func() bool {
		pod := &corev1.Pod{}
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, pod); err != nil {
			return false
		}
		if pod.Status.Phase == corev1.PodFailed {
			return true
		}
		s.mu.Lock()
		s.exited[string(pod.UID)] = true
		delete(s.running, string(pod.UID))
		s.mu.Unlock()
		s.setStatus(ctx, pod, corev1.PodFailed, false, &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 137, Reason: "OOMKilled", Message: "killed"}})
		return false
	})
}
