package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
)

// reconcileCheckpointing binds the replay queue, then checkpoints the
// source. The order is the correctness contract: every message the source
// acks after the checkpoint must already be duplicated into the replay
// queue, or the target would never see it.
func (r *Reconciler) reconcileCheckpointing(ctx context.Context, s *scope) (reconcile.Result, error) {
	pod, err := r.sourcePod(ctx, s.m)
	if apierrors.IsNotFound(err) || (err == nil && (pod.UID == "" || !pod.DeletionTimestamp.IsZero())) {
		return s.fail(v1alpha1.ReasonSourceLost, "source pod %q disappeared during the checkpoint", s.m.Spec.SourcePod)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	st := &s.m.Status
	// First: its sandbox takes longer to come up (0.4-0.7 s in the lab)
	// than the replay queue's bind, the fence and a small dump together,
	// and a restore waiting for it is time the stream waits too.
	if r.warmTarget(s) && !s.isDone(v1alpha1.ConditionTargetPrepared) {
		if err := r.prepareTarget(ctx, s, pod); err != nil {
			return reconcile.Result{}, err
		}
	}
	if s.hasBroker() && st.Plan.HoldSource && !s.isDone(v1alpha1.ConditionTopologyPrepared) {
		if res, ok, err := r.declareBuffer(ctx, s); !ok {
			return res, err
		}
	}
	if s.hasBroker() && !s.isDone(v1alpha1.ConditionTopologyPrepared) {
		h, err := s.brokerSession(ctx)
		if err == nil {
			err = h.Prepare(ctx, s.brokerRecord())
		}
		if err != nil {
			if broker.IsRetryable(err) {
				return reconcile.Result{}, err
			}
			return s.fail(broker.ReasonOf(err), "preparing the replay queue: %v", err)
		}
		// When Prepare returned (the bind), not when the reconcile began.
		bound := metav1.NewMicroTime(r.Clock.Now())
		s.brokerRecord().ReplayBoundTime = &bound
		s.done(v1alpha1.ConditionTopologyPrepared, "replay queue "+s.brokerRecord().ReplayQueue+" bound before the checkpoint")
	}
	if s.hasBroker() && !s.isDone(v1alpha1.ConditionReplayCoversSource) {
		if res, covered, err := r.waitReplayCoverage(ctx, s); !covered {
			return res, err
		}
	}
	req := agentapi.CheckpointRequest{
		ID: s.id, Namespace: s.m.Namespace, Pod: pod.Name, PodUID: string(pod.UID), Container: st.ContainerName,
		ContainerID: containerID(pod, st.ContainerName), Engine: agentEngine(st.Plan.CheckpointEngine), Hold: st.Plan.HoldSource,
	}
	for _, name := range st.Plan.CheckpointedContainers {
		req.Others = append(req.Others, agentapi.ContainerRef{Name: name, ContainerID: containerID(pod, name)})
	}
	if st.Plan.MemoryTechnique == v1alpha1.MemoryPostCopy {
		req.PagesTo, req.PagesFromDump = st.TargetNode, !postCopyHoldsSource(st)
	}
	if st.Plan.MemoryTechnique == v1alpha1.MemoryStream && !s.isDone(v1alpha1.ConditionCheckpointCreated) {
		// The target takes no pages it was not told of; told again on
		// each look, which is harmless (one stream per checkpoint).
		if err := r.Agents.Expect(ctx, st.TargetNode, s.id, agentapi.ExpectRequest{SourceNode: st.SourceNode, Pages: true}); err != nil {
			return reconcile.Result{}, fmt.Errorf("announcing the pages of checkpoint %s to %s: %w", s.id, st.TargetNode, err)
		}
		req.StreamTo = st.TargetNode
	}
	op, err := r.Agents.Checkpoint(ctx, st.SourceNode, req)
	if err != nil {
		return reconcile.Result{}, err
	}
	switch op.State {
	case agentapi.OpFailed:
		return s.fail(v1alpha1.ReasonCheckpointFailed, "checkpoint of %s/%s on %s: %s", pod.Name, st.ContainerName, st.SourceNode, op.Message)
	case agentapi.OpRunning:
		// a held source stays frozen, not serving, once its dump is done
		// (until its queue is taken from it, or the target runs)
		return s.pollOp(), nil
	}
	if !s.isDone(v1alpha1.ConditionCheckpointCreated) {
		res := op.Result
		created := metav1.NewTime(res.CreatedAt)
		st.Checkpoint = &v1alpha1.CheckpointStatus{ID: s.id, SizeBytes: res.SizeBytes, CreatedAt: &created,
			FreezeDuration: &metav1.Duration{Duration: res.Freeze}}
		if res.StreamedBytes > 0 {
			notePageBytes(st, res.StreamedBytes)
		}
		s.done(v1alpha1.ConditionCheckpointCreated, "checkpoint of container "+st.ContainerName+" on "+st.SourceNode)
		frozen := fmt.Sprintf("source frozen %s", res.Freeze)
		if res.FreezeSteps != "" {
			frozen += " (" + res.FreezeSteps + ")"
		}
		switch {
		case res.Held && st.Plan.Strategy == v1alpha1.StrategyShadowPod:
			frozen = fmt.Sprintf("dumped in %s; the source stays frozen until its queue is taken from it", res.Freeze)
		case res.LazyPages && !postCopyHoldsSource(st):
			frozen = fmt.Sprintf("source frozen %s; its memory is served to %s from the dump", res.Freeze, st.TargetNode)
		case res.LazyPages:
			frozen = fmt.Sprintf("dumped without its memory pages in %s; the source stays frozen, serving them to %s", res.Freeze, st.TargetNode)
		case res.Held:
			frozen = fmt.Sprintf("dumped in %s; the source stays frozen until it is stopped", res.Freeze)
		case res.StreamedBytes > 0:
			frozen = fmt.Sprintf("source frozen %s; %d bytes of memory went to %s as they were dumped", res.Freeze, res.StreamedBytes, st.TargetNode)
		}
		s.event(corev1.EventTypeNormal, v1alpha1.ConditionCheckpointCreated, "Checkpoint", "checkpointed %s/%s with %s: %d bytes, %s",
			pod.Name, st.ContainerName, res.Engine, res.SizeBytes, frozen)
	}
	if quiesces(st) && !s.isDone(v1alpha1.ConditionSourceQuiesced) {
		if res, done, err := r.quiesceSource(ctx, s, pod); !done {
			return res, err
		}
	}
	s.enter(v1alpha1.PhaseTransferring)
	return next(), nil
}

// quiesces: the Handoff technique for a ShadowPod source, which is thawed
// after its checkpoint and serves on, off its queue.
func quiesces(st *v1alpha1.StatefulMigrationStatus) bool {
	return st.Plan.HoldSource && st.Plan.Strategy == v1alpha1.StrategyShadowPod
}

// quiesceSource takes the primary queue from the source held frozen at its
// checkpoint, then thaws it. Frozen, it can neither ack nor reconnect: once
// its consumer's connection is closed, the broker has taken back, in
// order, everything it was sent and had not acked, so the queue holds
// exactly what the checkpoint lacks (plus, for a workload without the SDK,
// at most the message it had applied and not yet acked at the freeze). The
// exclusive consumer ms2m then holds keeps the thawed source off the queue
// while it serves its HTTP clients, until the target takes over.
func (r *Reconciler) quiesceSource(ctx context.Context, s *scope, pod *corev1.Pod) (reconcile.Result, bool, error) {
	st := &s.m.Status
	h, err := s.brokerSession(ctx)
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
		return res, false, ferr
	}
	rec := s.brokerRecord()
	done, why, err := h.Quiesce(ctx, rec, podAddresses(pod))
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonNoHandoff)
		return res, false, ferr
	}
	if !done {
		s.condition(v1alpha1.ConditionSourceQuiesced, metav1.ConditionFalse, "Disconnecting", why)
		return s.pollHandoff(), false, nil
	}
	if err := r.Agents.ThawHeld(ctx, st.SourceNode, st.Checkpoint.ID); err != nil {
		return reconcile.Result{}, false, fmt.Errorf("thawing source %s on %s: %w", pod.Name, st.SourceNode, err)
	}
	q := s.m.Spec.MessageQueueConfig.QueueName
	s.done(v1alpha1.ConditionSourceQuiesced, fmt.Sprintf("source's consumer disconnected (connection %s) while frozen, queue %s held by ms2m's exclusive consumer, source thawed: it serves its clients but takes no message until the target consumes the queue",
		rec.SourceDisconnected, q))
	s.event(corev1.EventTypeNormal, v1alpha1.ConditionSourceQuiesced, "Handoff", "took queue %s from %s at its checkpoint and thawed it", q, pod.Name)
	return reconcile.Result{}, true, nil
}

// declareBuffer readies the handoff of a source held at its checkpoint: a
// replay queue that nothing feeds (the protocol's START_REPLAY names one),
// and no coverage to wait for, since the held source acknowledges nothing
// the checkpoint lacks.
func (r *Reconciler) declareBuffer(ctx context.Context, s *scope) (reconcile.Result, bool, error) {
	h, err := s.brokerSession(ctx)
	if err == nil {
		err = h.DeclareBuffer(ctx, s.brokerRecord())
	}
	if err == nil {
		// The target, the same program, reads the same kind of queue.
		err = noteSourceControlQueue(ctx, s, h)
	}
	if err != nil {
		if broker.IsRetryable(err) {
			return reconcile.Result{}, false, err
		}
		res, ferr := s.fail(broker.ReasonOf(err), "declaring the replay queue: %v", err)
		return res, false, ferr
	}
	s.done(v1alpha1.ConditionTopologyPrepared, "replay queue "+s.brokerRecord().ReplayQueue+" declared and left unbound: the source is held frozen at its checkpoint, so its own queue keeps the rest")
	s.done(v1alpha1.ConditionReplayCoversSource, "the source is held frozen at its checkpoint: what it has not applied, it has not acknowledged, and its queue keeps it in order")
	return reconcile.Result{}, true, nil
}

// noteSourceControlQueue records which control queue the source reads
// (while it still runs): START_REPLAY goes to the same kind for the target.
func noteSourceControlQueue(ctx context.Context, s *scope, h broker.Handoff) error {
	rec := s.brokerRecord()
	if rec.SourceControlQueue != "" {
		return nil
	}
	q, err := sourceControlQueue(ctx, h, s.m.Namespace, s.m.Spec.SourcePod)
	if err != nil {
		return err
	}
	rec.SourceControlQueue = q
	return nil
}

// containerID is the runtime's ID of the pod's container, without its
// scheme ("" before the kubelet reports it).
func containerID(pod *corev1.Pod, name string) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == name {
			_, id, found := strings.Cut(cs.ContainerID, "://")
			if !found {
				return cs.ContainerID
			}
			return id
		}
	}
	return ""
}

// agentEngine is the agent's name of a resolved engine.
func agentEngine(e v1alpha1.CheckpointEngine) agentapi.CheckpointEngine {
	if e == v1alpha1.CheckpointEngineRunc {
		return agentapi.EngineRunc
	}
	return agentapi.EngineKubelet
}

// warmTarget: the target pod is created while the source is checkpointed,
// so that its sandbox, network and image are ready when the checkpoint is
// staged; ms2m's runtime handler holds its container's creation until
// then. A Sequential target takes the source's name and cannot exist
// beside it; a checkpoint image restore needs the image first.
func (r *Reconciler) warmTarget(s *scope) bool {
	st := &s.m.Status
	return st.Plan.Strategy == v1alpha1.StrategyShadowPod && st.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler && !isSwap(s.m)
}

func (r *Reconciler) prepareTarget(ctx context.Context, s *scope, src *corev1.Pod) error {
	st := &s.m.Status
	pod := r.renderTarget(s, src)
	if err := r.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	s.done(v1alpha1.ConditionTargetPrepared, fmt.Sprintf("target pod %s created on %s before the checkpoint: it restores once the checkpoint is staged", pod.Name, st.TargetNode))
	s.event(corev1.EventTypeNormal, v1alpha1.ConditionTargetPrepared, "Restore", "created target pod %s on %s ahead of its checkpoint", pod.Name, st.TargetNode)
	return nil
}

// waitReplayCoverage holds the checkpoint until the replay queue holds
// everything the source has not applied yet (see migration.ReplayCovers).
func (r *Reconciler) waitReplayCoverage(ctx context.Context, s *scope) (reconcile.Result, bool, error) {
	h, err := s.brokerSession(ctx)
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
		return res, false, ferr
	}
	rec := s.brokerRecord()
	p, err := h.Progress(ctx, rec)
	if err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
		return res, false, ferr
	}
	if err := noteSourceControlQueue(ctx, s, h); err != nil {
		res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
		return res, false, ferr
	}
	c := coverage(p.Primary, p.Buffer, int64(rec.FencesSent), broker.DegradedBy(h) != nil, r.Options.AssumedPrefetch)
	var covered bool
	var why string
	if s.sourceHasSDK() && c.Consumers == 1 {
		if covered, why, err = r.sourcePassedFence(ctx, s, h, rec); err != nil {
			res, ferr := s.retryOrFail(err, v1alpha1.ReasonCheckpointFailed)
			return res, false, ferr
		}
	} else {
		covered, why = migration.ReplayCovers(c)
	}
	if !covered {
		s.condition(v1alpha1.ConditionReplayCoversSource, metav1.ConditionFalse, "SourceBehind", why)
		// an SDK source reports its fence within milliseconds: looked at
		// like a node operation, often at first
		return s.pollOp(), false, nil
	}
	s.done(v1alpha1.ConditionReplayCoversSource, why)
	return reconcile.Result{}, true, nil
}

// fenceSettle separates the bind of the replay queue from the fence. A
// message the broker routed just before the bind (so not to the replay
// queue) travels from its publisher's channel to the queue on its own: on a
// quorum queue under load it can be appended after a fence published at
// once on the controller's channel, pass the fence unseen and be applied
// after the checkpoint, a hole in the target's stream (property seed
// 524367). The wait makes that far less likely; a target that still finds
// a hole reports it and the migration rolls back (targetSawGap).
const fenceSettle = 100 * time.Millisecond

// sourcePassedFence decides for a source with the SDK (it consumes its
// namespaced control queue): it acks a fence unapplied and reports
// reaching it, so a fence put behind everything in its queue proves it
// has applied everything older, exactly. Its report, not the queue
// counts, decides: a quorum queue's count of ready messages lags its
// enqueues, and a count taken short let the checkpoint miss messages
// (property seed 524430).
func (r *Reconciler) sourcePassedFence(ctx context.Context, s *scope, h broker.Handoff, rec *v1alpha1.BrokerStatus) (bool, string, error) {
	if rec.FencesSent == 0 {
		if b := rec.ReplayBoundTime; b != nil && s.now.Sub(b.Time) < fenceSettle {
			return false, "letting messages routed before the replay queue was bound reach the queue before the fence goes in behind them", nil
		}
		if err := h.Fence(ctx, 1, rec); err != nil {
			return false, "", err
		}
	}
	if err := s.readReports(ctx, h); err != nil {
		return false, "", err
	}
	if !rec.SourcePassedFence {
		return false, "waiting for the source (it has the ms2m SDK) to reach the fence put into its queue after the replay queue was bound, behind everything it has not applied yet", nil
	}
	return true, "the source (it has the ms2m SDK) reported reaching the fence put into its queue after the replay queue was bound: it has applied everything older", nil
}

// coverage turns what the broker reports of the two queues into what
// migration.ReplayCovers decides on. The prefetch is the broker's report;
// only a broker that cannot describe its consumers at all (RabbitMQ
// without its management API) gets the operator's assumption, marked as
// one.
func coverage(primary, buffer broker.QueueStats, fences int64, degraded bool, assumed int64) migration.ReplayCoverage {
	c := migration.ReplayCoverage{PrimaryReady: primary.Ready, BufferReady: buffer.Ready, Consumers: primary.Consumers, Fences: fences}
	switch {
	case primary.PrefetchKnown:
		c.Prefetch = int64(primary.Prefetch)
	case degraded:
		c.Prefetch, c.PrefetchAssumed = assumed, true
	}
	return c
}
