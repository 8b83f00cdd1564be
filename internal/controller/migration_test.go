package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/render"
	"github.com/ms2m/ms2m/internal/staging"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

const migrationTimeout = 60 * time.Second

func TestShadowPodMigrationWalksEveryPhase(t *testing.T) {
	w := newWorld(t)
	before := w.topology()
	src := w.sourcePod("consumer-0")
	w.produce(100)
	time.Sleep(time.Second)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	m := w.waitCompleted(name)
	st := &m.Status
	for _, p := range v1alpha1.Phases[1:] { // Pending may take no measurable time
		if migration.PhaseDuration(st, p) <= 0 {
			t.Errorf("phase %s has no recorded duration: %+v", p, st.PhaseTimings)
		}
	}
	for _, c := range []string{v1alpha1.ConditionTopologyPrepared, v1alpha1.ConditionCheckpointCreated, v1alpha1.ConditionCheckpointTransferred,
		v1alpha1.ConditionTargetRestored, v1alpha1.ConditionReplayStarted, v1alpha1.ConditionSourceStopped, v1alpha1.ConditionReplaySealed,
		v1alpha1.ConditionTargetSwitched, v1alpha1.ConditionTopologyRestored, v1alpha1.ConditionStreamIntact, v1alpha1.ConditionSucceeded} {
		if !migration.IsTrue(st, c) {
			t.Errorf("condition %s is not True", c)
		}
	}
	if st.Plan.Strategy != v1alpha1.StrategyShadowPod || st.SourceNode != "node-a" || st.TargetNode != "node-b" || st.TargetPod != "consumer-0-shadow" {
		t.Errorf("resolved %s %s→%s %s", st.Plan.Strategy, st.SourceNode, st.TargetNode, st.TargetPod)
	}
	if st.Downtime == nil || st.Downtime.Unavailable == nil || st.Downtime.Unavailable.Duration != 0 || st.Downtime.HandoffGap == nil {
		t.Errorf("downtime %+v: a ShadowPod source serves until the target is in", st.Downtime)
	}
	if st.TotalDuration == nil || st.Checkpoint == nil || st.Checkpoint.SizeBytes == 0 || st.Transfer == nil || st.Transfer.BytesTransferred == 0 {
		t.Errorf("status lacks totals: %+v %+v %+v", st.TotalDuration, st.Checkpoint, st.Transfer)
	}

	// The source let go of its queue (it has the SDK); its pod goes
	// after completion. The target runs on node-b and is in its Services.
	w.waitSourceRetired(name, src)
	if !migration.IsTrue(&w.get(name).Status, v1alpha1.ConditionTargetServing) {
		t.Error("the source went before TargetServing")
	}
	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: st.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	if target.Spec.NodeName != "node-b" || !render.CutoverOpen(target) {
		t.Errorf("target on %s, cutover gate open: %v", target.Spec.NodeName, render.CutoverOpen(target))
	}
	// node-b has ms2m's runtime handler: the target runs the workload's
	// own image under its RuntimeClass, restored from what was staged.
	if st.Plan.RestorePath != v1alpha1.RestoreRuntimeHandler || !strings.Contains(st.Plan.RestorePathReason, "node-b") || !migration.IsTrue(st, v1alpha1.ConditionCheckpointStaged) ||
		!migration.IsTrue(st, v1alpha1.ConditionTargetPrepared) {
		t.Errorf("restore path %q (%s), CheckpointStaged %v, TargetPrepared (warm target) %v", st.Plan.RestorePath, st.Plan.RestorePathReason,
			migration.IsTrue(st, v1alpha1.ConditionCheckpointStaged), migration.IsTrue(st, v1alpha1.ConditionTargetPrepared))
	}
	if target.Spec.RuntimeClassName == nil || *target.Spec.RuntimeClassName != "ms2m" || target.Spec.Containers[0].Image != src.Spec.Containers[0].Image ||
		target.Annotations[staging.AnnotationRestore] != st.Checkpoint.ID {
		t.Errorf("target pod: runtimeClass %v, image %s, restore annotation %q", target.Spec.RuntimeClassName, target.Spec.Containers[0].Image, target.Annotations[staging.AnnotationRestore])
	}
	w.checkExactlyOnce(st.TargetPod)
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
	// the checkpoint goes once the migration has completed
	sdktest.Eventually(t, 10*time.Second, "CheckpointRemoved", func() bool {
		return migration.IsTrue(&w.get(name).Status, v1alpha1.ConditionCheckpointRemoved)
	})
	w.sim.mu.Lock()
	snaps, cleanA, cleanB := w.sim.snapshots[st.Checkpoint.ID], w.sim.cleanups["node-a"], w.sim.cleanups["node-b"]
	w.sim.mu.Unlock()
	if snaps != 1 || cleanA == 0 || cleanB == 0 {
		t.Errorf("checkpoints taken %d (want 1); cleanups node-a %d node-b %d", snaps, cleanA, cleanB)
	}
	sdktest.Eventually(t, 5*time.Second, "events", func() bool {
		ev := w.events(name)
		return slices.Contains(ev, v1alpha1.ReasonStarted) && slices.Contains(ev, string(v1alpha1.PhaseReplaying)) && slices.Contains(ev, v1alpha1.ReasonCompleted)
	})
}

// A container restored through the runtime handler is restored when the
// handler starts it: the migration replays while the kubelet has yet to
// look at the runtime again, and still waits for its Ready to cut over.
func TestRestoredContainerReplaysBeforeTheKubeletReportsIt(t *testing.T) {
	w := newWorld(t)
	w.sim.kubeletLag = 3 * time.Second
	w.sourcePod("consumer-0")
	w.produce(60)
	time.Sleep(500 * time.Millisecond)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	m := w.waitCompleted(name)
	st := &m.Status
	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: st.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	w.sim.mu.Lock()
	reported, ok := w.sim.reportedRunning[string(target.UID)]
	w.sim.mu.Unlock()
	if !ok {
		t.Fatal("the kubelet never reported the target running, yet the migration completed")
	}
	replaying := phaseTiming(m, v1alpha1.PhaseReplaying)
	if replaying.Start.IsZero() || !replaying.Start.Time.Before(reported) {
		t.Errorf("replay began %s, the kubelet reported the target at %s: Restoring waited for the kubelet", replaying.Start.Format(time.RFC3339Nano), reported.Format(time.RFC3339Nano))
	}
	if c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionTargetRestored); c == nil || !strings.Contains(c.Message, "runtime handler started the restored container") {
		t.Errorf("TargetRestored: %+v", c)
	}
	// The cutover still waits for the kubelet: the source lets go of the
	// stream only once the kubelet says the target's containers are ready.
	if d := st.Downtime; d == nil || d.SourceStoppedTime == nil || d.SourceStoppedTime.Time.Before(reported) {
		t.Errorf("source stopped (%+v) before the kubelet reported the target (%s)", d, reported.Format(time.RFC3339Nano))
	}
	w.checkExactlyOnce(st.TargetPod)
}

func TestSequentialDrainMigration(t *testing.T) {
	w := newWorld(t)
	before := w.topology()
	src := w.sourcePod("consumer-0")
	w.produce(100)
	time.Sleep(500 * time.Millisecond)
	w.startManager()
	name := w.b.Name("mig")
	// node-b restores checkpoint images itself (containerd 2.1): the
	// path that needs no runtime handler still works.
	w.sim.checkpointImageOnly["node-b"] = true
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.ReplayMode, s.TransferMode = v1alpha1.StrategySequential, v1alpha1.ReplayDrain, v1alpha1.TransferDirect
	})
	m := w.waitCompleted(name)
	if m.Status.Plan.RestorePath != v1alpha1.RestoreCheckpointImage {
		t.Errorf("restore path %q (%s) on a node that only restores checkpoint images", m.Status.Plan.RestorePath, m.Status.Plan.RestorePathReason)
	}
	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0"}, target); err != nil {
		t.Fatal(err)
	}
	if target.UID == src.UID || target.Spec.NodeName != "node-b" {
		t.Fatalf("consumer-0 is not the restored pod on node-b (uid %s, node %s)", target.UID, target.Spec.NodeName)
	}
	if m.Status.Downtime == nil || m.Status.Downtime.Unavailable == nil || m.Status.Downtime.Unavailable.Duration <= 0 {
		t.Errorf("a Sequential migration has a measurable unavailability, got %+v", m.Status.Downtime)
	}
	w.checkExactlyOnce("consumer-0")
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
}

// checkExactlyOnce stops the producer, waits for the target to apply the
// last message, and checks that the target applied exactly the sequence
// numbers after its checkpoint, once each and in order, and that its digest
// equals the reference computed from what the broker confirmed.
func (w *world) checkExactlyOnce(targetPod string) {
	w.t.Helper()
	last := w.stopPub()
	refLast, refDigest := w.reference()
	if refLast != last || last == 0 {
		w.t.Fatalf("producer published up to %d, confirmed up to %d", last, refLast)
	}
	p := w.sim.pod(targetPod)
	if p == nil || p.restored == nil {
		w.t.Fatalf("no restored workload runs in %s", targetPod)
	}
	sdktest.Eventually(w.t, 90*time.Second, "target applied the last message", func() bool {
		return p.consumer.Snapshot().LastSeq == last
	})
	from := p.restored.LastSeq
	got := p.appliedSeqs()
	if int64(len(got)) != last-from {
		w.t.Errorf("target applied %d message(s) after its checkpoint at %d, want %d (through %d)", len(got), from, last-from, last)
	}
	for i, seq := range got {
		if want := from + int64(i) + 1; seq != want {
			w.t.Fatalf("target's %d-th message was seq %d, want %d (lost, duplicated or reordered)", i+1, seq, want)
		}
	}
	if d := p.consumer.Snapshot().Digest.String(); d != refDigest {
		w.t.Errorf("target digest %s != reference %s", d, refDigest)
	}
	if from == 0 || from >= last {
		w.t.Errorf("checkpoint at seq %d of %d: the test did not exercise a replay window", from, last)
	}
}

// A consumer slower than its producer has a backlog that predates the
// replay queue: those messages are in neither the replay queue nor, until
// the source applies them, the checkpoint. The checkpoint waits for them.
func TestBacklogFromBeforeTheReplayQueueIsNotLost(t *testing.T) {
	w := newWorld(t)
	w.sim.delay = 20 * time.Millisecond // ~45 msg/s of capacity
	w.sourcePod("consumer-0")
	w.produce(80)
	time.Sleep(2 * time.Second) // a backlog of ~70 messages builds up
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.ReplayCutoffSeconds = 2 })
	sdktest.Eventually(t, migrationTimeout, "checkpoint held back", func() bool {
		m := w.get(name)
		for _, c := range m.Status.Conditions {
			if c.Type == v1alpha1.ConditionReplayCoversSource {
				return true
			}
		}
		return m.Status.Phase.IsFinal()
	})
	m := w.waitCompleted(name)
	w.checkExactlyOnce(m.Status.TargetPod)
}

// Some of the stream reaches the queue through the default exchange,
// which no replay queue can copy: the target sees the holes as it replays
// and reports them at once. A ShadowPod source still serves and has
// applied them, so the migration rolls back and loses nothing; a
// Sequential source dumped by the kubelet is gone, so the migration
// completes and says what was lost (StreamIntact False, a MessagesLost
// Warning) instead of reporting a clean success. A Sequential source held
// at its checkpoint (the runc engine) acknowledged nothing after it: its
// queue kept every message, however it came, and nothing is lost.
func TestLossTheTargetSeesIsReported(t *testing.T) {
	for _, c := range []struct {
		strategy v1alpha1.MigrationStrategy
		engine   v1alpha1.CheckpointEngine
		phase    v1alpha1.Phase
		intact   metav1.ConditionStatus
	}{
		{v1alpha1.StrategyShadowPod, v1alpha1.CheckpointEngineAuto, v1alpha1.PhaseFailed, metav1.ConditionFalse},
		{v1alpha1.StrategySequential, v1alpha1.CheckpointEngineKubelet, v1alpha1.PhaseCompleted, metav1.ConditionFalse},
		{v1alpha1.StrategySequential, v1alpha1.CheckpointEngineRunc, v1alpha1.PhaseCompleted, metav1.ConditionTrue},
	} {
		t.Run(string(c.strategy)+"/"+string(c.engine), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.sourcePod("consumer-0")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go publishSomeAroundTheExchange(t, ctx, w)
			time.Sleep(500 * time.Millisecond)
			w.startManager()
			name := w.b.Name("mig")
			w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
				s.MigrationStrategy, s.CheckpointEngine = c.strategy, c.engine
			})
			m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
			if m.Status.Phase != c.phase {
				t.Fatalf("phase %s (%s: %s), want %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage, c.phase)
			}
			cond := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionStreamIntact)
			if cond == nil || cond.Status != c.intact {
				t.Fatalf("StreamIntact %+v, want %s", cond, c.intact)
			}
			if c.intact == metav1.ConditionTrue {
				if tr := m.Status.Messages.Target; tr == nil || tr.Lost != 0 || !m.Status.Plan.HoldSource {
					t.Errorf("held source: status.messages.target %+v, holdSource %v", tr, m.Status.Plan.HoldSource)
				}
				// Its agent ended it where it stood; deleting its pod
				// would have waited for a frozen process's grace.
				w.sim.mu.Lock()
				ended := w.sim.endedHeld
				w.sim.mu.Unlock()
				if ended == 0 {
					t.Error("the held source was stopped without its agent ending it")
				}
				return
			}
			if cond.Reason != v1alpha1.ReasonMessagesLost {
				t.Errorf("StreamIntact reason %s, want %s", cond.Reason, v1alpha1.ReasonMessagesLost)
			}
			if tr := m.Status.Messages.Target; tr == nil || tr.Lost == 0 || tr.Gaps == 0 {
				t.Errorf("status.messages.target %+v: the loss the target saw is not in status", tr)
			}
			sdktest.Eventually(t, 5*time.Second, "a MessagesLost Warning", func() bool {
				return slices.Contains(w.events(name), v1alpha1.ReasonMessagesLost)
			})
			if c.phase == v1alpha1.PhaseFailed {
				if m.Status.FailureReason != v1alpha1.ReasonMessagesLost || !meta(m, v1alpha1.ConditionRolledBack) {
					t.Fatalf("reason %q, RolledBack %v: want a rollback for the gap while the source serves", m.Status.FailureReason, meta(m, v1alpha1.ConditionRolledBack))
				}
				w.expectSourceServing("consumer-0")
			}
		})
	}
}

// publishSomeAroundTheExchange publishes one sequence at 100 msg/s, every
// fifth message straight to the queue, until ctx ends.
func publishSomeAroundTheExchange(t *testing.T, ctx context.Context, w *world) {
	conn, err := amqp.Dial(w.amqpURL)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Error(err)
		return
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for seq := int64(1); ctx.Err() == nil; seq++ {
		<-tick.C
		ex, key := w.exchange, "orders"
		if seq%5 == 0 {
			ex, key = "", w.queue // straight to the queue
		}
		_ = ch.Publish(ex, key, false, false, amqp.Publishing{
			Headers: amqp.Table{sdk.SeqHeader: seq, sdk.ProducerHeader: "p"}, Body: fmt.Appendf(nil, "%d", seq)})
	}
}
