package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/ckptcrypt"
	"github.com/ms2m/ms2m/internal/migration"
)

// reconcileTransferring moves the checkpoint to where the target node's
// runtime can restore it, reporting bytes and rate as they come.
func (r *Reconciler) reconcileTransferring(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	if st.Plan.TransferMode == v1alpha1.TransferDirect && !s.isDone(v1alpha1.ConditionCheckpointTransferred) {
		// The target takes no archive it was not told of (see agent
		// expectations); told again on each look, which is harmless.
		err := r.Agents.Expect(ctx, st.TargetNode, st.Checkpoint.ID, agentapi.ExpectRequest{SourceNode: st.SourceNode,
			ForStaging: st.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler})
		if errors.Is(err, agentapi.ErrNoAgent) {
			return s.fail(v1alpha1.ReasonTransferFailed, "Direct transfer of the checkpoint to %s: %v", st.TargetNode, err)
		}
		if err != nil {
			return reconcile.Result{}, err
		}
	}
	key, err := r.checkpointKey(s)
	if err != nil {
		return s.fail(v1alpha1.ReasonTransferFailed, "%v", err)
	}
	op, err := r.Agents.Transfer(ctx, st.SourceNode, agentapi.TransferRequest{
		ID: s.id, CheckpointID: st.Checkpoint.ID, Mode: agentapi.TransferMode(st.Plan.TransferMode),
		Repository: r.repository(s.m), TargetNode: st.TargetNode, Container: st.ContainerName,
		BytesPerSecond: st.Plan.BandwidthBytesPerSecond, EncryptionKey: key,
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	p := op.Progress
	if st.Transfer == nil {
		st.Transfer = &v1alpha1.TransferStatus{}
	}
	// The archive's progress; pageBytes (the pages a Stream dump sent) stays.
	t := st.Transfer
	before := migration.Moved(t)
	t.BytesTotal, t.BytesTransferred, t.BytesRemaining, t.RateBytesPerSecond = p.BytesTotal, p.BytesDone, max(p.BytesTotal-p.BytesDone, 0), p.BytesPerSecond
	t.ETASeconds = 0
	if t.RateBytesPerSecond > 0 && t.BytesRemaining > 0 {
		t.ETASeconds = (t.BytesRemaining + t.RateBytesPerSecond - 1) / t.RateBytesPerSecond
	}
	switch op.State {
	case agentapi.OpFailed:
		return s.fail(v1alpha1.ReasonTransferFailed, "%s transfer of the checkpoint to %s: %s", st.Plan.TransferMode, st.TargetNode, op.Message)
	case agentapi.OpRunning:
		if stalled, why := migration.TransferStalled(t, before, s.now, st.Plan.Timeouts); stalled {
			return s.fail(v1alpha1.ReasonTimeout, "%s transfer of the checkpoint to %s: %s", st.Plan.TransferMode, st.TargetNode, why)
		}
		return s.pollOp(), nil
	}
	if !s.isDone(v1alpha1.ConditionCheckpointTransferred) {
		st.Checkpoint.Image = op.Result.Image
		s.done(v1alpha1.ConditionCheckpointTransferred, "checkpoint image "+op.Result.Image)
		s.event(corev1.EventTypeNormal, v1alpha1.ConditionCheckpointTransferred, "Transfer", "checkpoint available to %s as %s", st.TargetNode, op.Result.Image)
	}
	if st.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler {
		if res, staged, err := r.stageCheckpoint(ctx, s, op.Result.Seal); !staged {
			return res, err
		}
	}
	s.enter(v1alpha1.PhaseRestoring)
	return next(), nil
}

// checkpointKey is the key of the migration's checkpoint, where its plan
// encrypts it (nil otherwise): derived again on each use, never stored.
func (r *Reconciler) checkpointKey(s *scope) ([]byte, error) {
	st := &s.m.Status
	if !st.Plan.EncryptCheckpoint {
		return nil, nil
	}
	key, err := ckptcrypt.Key(r.Options.CheckpointSecret, st.Checkpoint.ID)
	if err != nil {
		return nil, fmt.Errorf("the plan encrypts checkpoint %s, but the manager cannot derive its key: %w", st.Checkpoint.ID, err)
	}
	return key, nil
}

// stageCheckpoint has the target node's agent unpack the checkpoint where
// ms2m's runtime handler restores it when the kubelet creates the target's
// container. It is staged for the target pod's name, before that pod
// exists.
//
// The target's agent stages it only under the seal of the source node's
// agent (see identity.Seal): a checkpoint altered or forged anywhere on its
// way fails the migration before anything is restored.
func (r *Reconciler) stageCheckpoint(ctx context.Context, s *scope, seal *agentapi.Seal) (reconcile.Result, bool, error) {
	st := &s.m.Status
	if s.isDone(v1alpha1.ConditionCheckpointStaged) {
		return reconcile.Result{}, true, nil
	}
	key, err := r.checkpointKey(s)
	if err != nil {
		res, err := s.fail(v1alpha1.ReasonTransferFailed, "%v", err)
		return res, false, err
	}
	op, err := r.Agents.Stage(ctx, st.TargetNode, agentapi.StageRequest{ID: st.Checkpoint.ID, Image: st.Checkpoint.Image, EncryptionKey: key,
		Namespace: s.m.Namespace, Pod: st.TargetPod, Container: st.ContainerName, SourceNode: st.SourceNode, Seal: seal,
		LazyPages: st.Plan.MemoryTechnique == v1alpha1.MemoryPostCopy, StreamedPages: st.Plan.MemoryTechnique == v1alpha1.MemoryStream,
		Others: st.Plan.CheckpointedContainers, BytesPerSecond: st.Plan.BandwidthBytesPerSecond})
	if err != nil {
		return reconcile.Result{}, false, err
	}
	before := migration.Moved(st.Transfer)
	st.Transfer.BytesStaged = op.Progress.BytesDone
	switch op.State {
	case agentapi.OpFailed:
		if strings.Contains(op.Message, agentapi.ErrUnauthenticated.Error()) {
			res, err := s.fail(v1alpha1.ReasonNotAuthenticated, "the target node %s refused the checkpoint: %s", st.TargetNode, op.Message)
			return res, false, err
		}
		res, err := s.fail(v1alpha1.ReasonTransferFailed, "staging the checkpoint on %s for ms2m's runtime handler: %s", st.TargetNode, op.Message)
		return res, false, err
	case agentapi.OpRunning:
		if stalled, why := migration.TransferStalled(st.Transfer, before, s.now, st.Plan.Timeouts); stalled {
			res, err := s.fail(v1alpha1.ReasonTimeout, "staging the checkpoint on %s: %s", st.TargetNode, why)
			return res, false, err
		}
		return s.pollOp(), false, nil
	}
	s.done(v1alpha1.ConditionCheckpointStaged, fmt.Sprintf("checkpoint staged on %s for %s/%s (%d bytes)", st.TargetNode, st.TargetPod, st.ContainerName, op.Result.SizeBytes))
	return reconcile.Result{}, true, nil
}
