package controller_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// A manager that dies in the middle of any phase is replaced by one that
// finishes the migration: no checkpoint taken twice, no second target pod,
// nothing lost or applied twice, the broker put back.
func TestManagerRestartResumesEveryPhase(t *testing.T) {
	for _, tc := range []struct {
		phase v1alpha1.Phase
		hold  string
		spec  func(*v1alpha1.StatefulMigrationSpec)
	}{
		{v1alpha1.PhasePending, "broker", nil}, // Pending waits for an unreachable broker
		{v1alpha1.PhaseCheckpointing, "checkpoint", nil},
		{v1alpha1.PhaseTransferring, "transfer", nil},
		{v1alpha1.PhaseRestoring, "restore", nil},
		{v1alpha1.PhaseReplaying, "replay", func(s *v1alpha1.StatefulMigrationSpec) { s.ReplayMode = v1alpha1.ReplayDrain }},
		{v1alpha1.PhaseFinalizing, "stop-source", nil},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			w := newWorld(t)
			w.opts.BrokerRetryWindow = time.Minute
			before := w.topology()
			w.sourcePod("consumer-0")
			w.produce(100)
			gate, gatedURL := newBrokerGate(t, w.amqpURL)
			spec := func(s *v1alpha1.StatefulMigrationSpec) {
				s.MessageQueueConfig.BrokerURL = gatedURL
				if tc.spec != nil {
					tc.spec(s)
				}
			}
			if tc.hold == "broker" {
				gate.set(true)
			} else {
				w.sim.hold(tc.hold)
			}
			stop := w.startManager()
			name := w.b.Name("mig")
			w.migration(name, "consumer-0", spec)
			w.waitPhase(name, migrationTimeout, tc.phase)
			time.Sleep(300 * time.Millisecond) // let the held phase be reconciled a few times
			stop()
			if m := w.get(name); m.Status.Phase != tc.phase {
				t.Fatalf("manager stopped in %s, want %s", m.Status.Phase, tc.phase)
			}
			time.Sleep(200 * time.Millisecond)
			w.startManager()
			w.sim.release(tc.hold)
			gate.set(false)
			m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
			if m.Status.Phase != v1alpha1.PhaseCompleted {
				t.Fatalf("after the restart the migration failed: %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
			}
			w.checkExactlyOnce(m.Status.TargetPod)
			w.sim.mu.Lock()
			snaps, targets := w.sim.snapshots[m.Status.Checkpoint.ID], len(w.sim.createdPods[m.Status.TargetPod])
			w.sim.mu.Unlock()
			if snaps != 1 || targets != 1 {
				t.Errorf("checkpoints taken %d, target pods started %d: want 1 each", snaps, targets)
			}
			if after := w.topology(); !slices.Equal(before, after) {
				t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// Deleting a migration mid-flight rolls it back: the target goes, the
// broker is as before, the source never stopped serving.
func TestDeleteMidFlightRestoresTopology(t *testing.T) {
	for _, tc := range []struct {
		phase v1alpha1.Phase
		hold  string
	}{
		{v1alpha1.PhaseCheckpointing, "checkpoint"},
		{v1alpha1.PhaseRestoring, "restore"},
		{v1alpha1.PhaseReplaying, "replay"},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			w := newWorld(t)
			before := w.topology()
			w.sourcePod("consumer-0")
			w.produce(100)
			w.sim.hold(tc.hold)
			w.startManager()
			name := w.b.Name("mig")
			m := w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.ReplayMode = v1alpha1.ReplayDrain })
			w.waitPhase(name, migrationTimeout, tc.phase)
			if tc.phase != v1alpha1.PhaseCheckpointing && len(w.topology()) == len(before) {
				t.Fatalf("the migration had not changed the broker yet; the test proves nothing")
			}
			if err := k8s.Delete(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			sdktest.Eventually(t, 30*time.Second, "migration gone", func() bool {
				return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(m), m))
			})
			w.sim.release(tc.hold)
			if after := w.topology(); !slices.Equal(before, after) {
				t.Errorf("broker topology not restored:\nbefore %v\nafter  %v", before, after)
			}
			w.expectSourceServing("consumer-0")
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0-shadow"}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
				t.Errorf("target pod left behind: %v", err)
			}
		})
	}
}

func TestAbortBeforeCutoverRollsBack(t *testing.T) {
	w := newWorld(t)
	before := w.topology()
	w.sourcePod("consumer-0")
	w.produce(100)
	w.sim.hold("restore")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseRestoring)
	setAbort(t, w, name)
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
	w.sim.release("restore")
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != v1alpha1.ReasonAborted || m.Status.FailedPhase != v1alpha1.PhaseRestoring {
		t.Fatalf("phase %s reason %s in %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailedPhase)
	}
	if a := m.Status.Abort; a == nil || a.Outcome != v1alpha1.AbortSucceeded {
		t.Fatalf("abort status %+v", a)
	}
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology not restored:\nbefore %v\nafter  %v", before, after)
	}
	w.expectSourceServing("consumer-0")
}

func TestAbortAfterSourceStoppedIsRejected(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.produce(100)
	w.sim.hold("replay") // in Finalizing the target cannot drain: the cutover waits with the source gone
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.ReplayCutoffSeconds = 1 })
	sdktest.Eventually(t, migrationTimeout, "source stopped", func() bool {
		m := w.get(name)
		return m.Status.Phase == v1alpha1.PhaseFinalizing && meta(m, v1alpha1.ConditionSourceStopped)
	})
	setAbort(t, w, name)
	sdktest.Eventually(t, 10*time.Second, "abort answered", func() bool { return w.get(name).Status.Abort != nil })
	w.sim.release("replay")
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseCompleted || m.Status.Abort.Outcome != v1alpha1.AbortRejected {
		t.Fatalf("phase %s, abort %+v", m.Status.Phase, m.Status.Abort)
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// Bad runtime input fails the migration with a reason, an Event, and
// nothing changed: the source serves on, the broker is as it was.
func TestFailuresLeaveNothingBehind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pod     string
		spec    func(*v1alpha1.StatefulMigrationSpec)
		prepare func(w *world)
		reason  string
		mention string
	}{
		{"missing source pod", "nobody", nil, nil, v1alpha1.ReasonSourcePodNotFound, `"nobody" not found`},
		{"target is the source node", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "node-a" }, nil, v1alpha1.ReasonTargetIsSource, "already runs on"},
		{"unknown target node", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "node-x" }, nil, v1alpha1.ReasonTargetNodeNotFound, "does not exist"},
		{"target node not ready", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "node-c" }, nil, v1alpha1.ReasonTargetNodeNotReady, "not Ready"},
		{"cordoned target node", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "node-d" },
			func(w *world) { w.sim.agents["node-d"] = true }, v1alpha1.ReasonTargetNodeUnschedulable, `"node-d" is cordoned`},
		{"checkpoint registry not allowed", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.TransferMode, s.CheckpointImageRepository = v1alpha1.TransferRegistry, "attacker.example/loot"
		}, nil, v1alpha1.ReasonNotAllowed, "--allowed-registries"},
		{"target node without agent", "consumer-0", nil, func(w *world) { w.sim.agents["node-b"] = false }, v1alpha1.ReasonAgentUnavailable, "no ready ms2m agent"},
		{"no node to choose", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "" }, func(w *world) { w.sim.agents["node-b"] = false }, v1alpha1.ReasonNoTargetNode, "node-c: not Ready"},
		{"unreachable broker", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.MessageQueueConfig.BrokerURL = "amqp://guest:guest@127.0.0.1:1/"
		}, nil, v1alpha1.ReasonBrokerUnreachable, "127.0.0.1:1"},
		{"queue not bound", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.MessageQueueConfig.RoutingKey = "other" }, nil, v1alpha1.ReasonBrokerTopology, "other"},
		{"source does not consume the queue", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.MessageQueueConfig.QueueName = s.MessageQueueConfig.QueueName + ".other"
		}, func(w *world) {
			w.b.Queue(w.t, w.queue+".other")
			w.b.Bind(w.t, w.queue+".other", w.exchange, "orders")
		}, v1alpha1.ReasonSourceNotConsuming, "has no consumer"},
		{"credentials secret missing", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.MessageQueueConfig.CredentialsSecretRef = &v1alpha1.SecretReference{Name: "rabbit"}
		}, nil, v1alpha1.ReasonCredentials, `"rabbit" not found`},
		{"checkpoint refused", "consumer-0", nil, func(w *world) { w.sim.agents["fail-checkpoint"] = true }, v1alpha1.ReasonCheckpointFailed, "refused"},
		{"checkpoint image cannot be pulled (containerd 2.1)", "consumer-0", nil, func(w *world) {
			w.sim.checkpointImageOnly["node-b"] = true
			w.sim.transferTo["*"] = imageNoSuchRef
		}, v1alpha1.ReasonRestoreFailed, "ErrImagePull"},
		{"checkpoint cannot be staged", "consumer-0", nil, func(w *world) { w.sim.transferTo["*"] = imageNoSuchRef }, v1alpha1.ReasonTransferFailed, "staging the checkpoint"},
		{"runtime handler refuses the restore", "consumer-0", nil, func(w *world) { w.sim.badRestore["consumer-0-shadow"] = true }, v1alpha1.ReasonRestoreFailed, "StartError"},
		{"target node cannot restore", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "node-b" },
			func(w *world) { w.sim.noRestore["node-b"] = true }, v1alpha1.ReasonNoRestorePath, "no longer restores"},
		{"held Sequential source thawed when the transfer fails", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.MigrationStrategy, s.CheckpointEngine = v1alpha1.StrategySequential, v1alpha1.CheckpointEngineRunc
		}, func(w *world) { w.sim.transferTo["*"] = imageNoSuchRef }, v1alpha1.ReasonTransferFailed, "staging the checkpoint"},
		{"runc engine asked of a node without it", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.CheckpointEngine = v1alpha1.CheckpointEngineRunc },
			func(w *world) { w.sim.kubeletOnly["node-a"] = true }, v1alpha1.ReasonNoCheckpointEngine, "node-a cannot dump with runc"},
		{"post-copy asked of a node that cannot serve a lazy dump", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.MigrationStrategy, s.MemoryTechnique = v1alpha1.StrategySequential, v1alpha1.MemoryPostCopy
		}, func(w *world) { w.sim.noLazyPages["node-a"] = true }, v1alpha1.ReasonNoMemoryTechnique, "source node node-a cannot serve a lazy dump"},
		{"post-copy of a replayed Sequential source", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.MigrationStrategy, s.MemoryTechnique, s.Handoff = v1alpha1.StrategySequential, v1alpha1.MemoryPostCopy, v1alpha1.HandoffReplay
		}, nil, v1alpha1.ReasonNoMemoryTechnique, "use handoff Handoff or Auto"},
		{"pre-copy", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.MemoryTechnique = v1alpha1.MemoryPreCopy },
			nil, v1alpha1.ReasonNoMemoryTechnique, "PreCopy requested, but source node node-a cannot"},
		{"phase timeout", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.Timeouts = &v1alpha1.MigrationTimeouts{Transfer: &metav1.Duration{Duration: time.Second}}
		}, func(w *world) { w.sim.hold("transfer") }, v1alpha1.ReasonTimeout, "Transferring did not finish within its timeout of 1s"},
		{"transfer stalls longer than the progress timeout", "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
			s.Timeouts = &v1alpha1.MigrationTimeouts{Progress: &metav1.Duration{Duration: time.Second}}
		}, func(w *world) { w.sim.hold("transfer") }, v1alpha1.ReasonTimeout, "Registry transfer of the checkpoint to node-b: the checkpoint's transfer moved no byte for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.sourcePod("consumer-0")
			w.produce(50)
			if tc.prepare != nil {
				tc.prepare(w)
			}
			before := w.topology()
			w.startManager()
			name := w.b.Name("mig")
			w.migration(name, tc.pod, tc.spec)
			m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
			if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != tc.reason {
				t.Fatalf("phase %s reason %q (%s), want Failed with %q", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage, tc.reason)
			}
			if !strings.Contains(m.Status.FailureMessage, tc.mention) {
				t.Errorf("failure message %q does not mention %q", m.Status.FailureMessage, tc.mention)
			}
			if !meta(m, v1alpha1.ConditionFailed) || !meta(m, v1alpha1.ConditionRolledBack) {
				t.Errorf("conditions Failed/RolledBack not True: %+v", m.Status.Conditions)
			}
			sdktest.Eventually(t, 5*time.Second, "a Warning Event with the reason", func() bool { return slices.Contains(w.events(name), tc.reason) })
			if after := w.topology(); !slices.Equal(before, after) {
				t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
			}
			w.expectSourceServing("consumer-0")
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0-shadow"}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
				t.Errorf("target pod left behind: %v", err)
			}
		})
	}
}

// expectSourceServing checks the source pod still runs and keeps applying.
func (w *world) expectSourceServing(pod string) {
	w.t.Helper()
	p := w.sim.pod(pod)
	if p == nil {
		w.t.Fatalf("source %s no longer runs", pod)
	}
	n := len(p.appliedSeqs())
	sdktest.Eventually(w.t, 10*time.Second, "source applying messages", func() bool { return len(p.appliedSeqs()) > n+5 })
	if st := w.b.Inspect(w.t, w.queue); st.Consumers != 1 {
		w.t.Errorf("primary queue has %d consumers, want the source alone", st.Consumers)
	}
}

func setAbort(t *testing.T, w *world, name string) {
	t.Helper()
	m := w.get(name)
	patch := client.MergeFrom(m.DeepCopy())
	m.Spec.Abort = true
	if err := k8s.Patch(context.Background(), m, patch); err != nil {
		t.Fatal(err)
	}
}

func meta(m *v1alpha1.StatefulMigration, cond string) bool {
	for _, c := range m.Status.Conditions {
		if c.Type == cond {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// A timeout that runs out after the source's stop was issued fails
// nothing: there is no source to roll back to. The migration says it is
// overdue and completes once the source is gone, exactly once.
func TestTimeoutPastThePointOfNoReturnRollsForward(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.produce(50)
	w.sim.hold("stop-source")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.Timeouts = &v1alpha1.MigrationTimeouts{Finalize: &metav1.Duration{Duration: 2 * time.Second}}
	})
	sdktest.Eventually(t, migrationTimeout, "Overdue reported", func() bool {
		return slices.Contains(w.events(name), v1alpha1.ReasonOverdue)
	})
	if m := w.get(name); m.Status.Phase != v1alpha1.PhaseFinalizing || m.Status.FailureReason != "" {
		t.Fatalf("phase %s, failure %q: an overdue cutover must not fail", m.Status.Phase, m.Status.FailureReason)
	}
	w.sim.release("stop-source")
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("migration %s: %s: %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// An overdue migration past the point of no return does not wait forever:
// FailForwardAfter past its deadline it fails forward, the target kept,
// and says so. Its target still replays (the source never went, so it was
// never switched to the primary queue): the replay topology stays for it,
// and an Event names the queue.
func TestOverduePastThePointOfNoReturnFailsForward(t *testing.T) {
	w := newWorld(t)
	w.opts.FailForwardAfter = 2 * time.Second
	w.sourcePod("consumer-0")
	w.produce(50)
	w.sim.hold("stop-source")
	t.Cleanup(func() { w.sim.release("stop-source") })
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.Timeouts = &v1alpha1.MigrationTimeouts{Finalize: &metav1.Duration{Duration: 2 * time.Second}}
	})
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != v1alpha1.ReasonTimeout || !strings.Contains(m.Status.FailureMessage, "failing forward") {
		t.Fatalf("migration %s: %s: %s, want failed forward on its timeout", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
	}
	if c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionRolledBack); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "PastPointOfNoReturn" {
		t.Errorf("RolledBack %+v, want False/PastPointOfNoReturn", c)
	}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, &corev1.Pod{}); err != nil {
		t.Errorf("the target was not kept: %v", err)
	}
	sdktest.Eventually(t, 10*time.Second, "Overdue, ReplayTopologyKept and Failed Events", func() bool {
		ev := w.events(name)
		return slices.Contains(ev, v1alpha1.ReasonOverdue) && slices.Contains(ev, "ReplayTopologyKept") && slices.Contains(ev, string(v1alpha1.PhaseFailed))
	})
}

// A broker that goes away in the middle of a migration and comes back is
// used again within seconds, not after the growing backoff controller-
// runtime gives a reconcile that keeps failing (with it, a migration sat
// idle more than a minute after RabbitMQ was back).
func TestBrokerOutageRetriedWithinSeconds(t *testing.T) {
	w := newWorld(t)
	w.opts.BrokerRetryWindow = 5 * time.Minute
	w.sourcePod("consumer-0")
	w.produce(50)
	gate, gatedURL := newBrokerGate(t, w.amqpURL)
	w.sim.hold("replay")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MessageQueueConfig.BrokerURL = gatedURL
		s.ReplayMode = v1alpha1.ReplayDrain
	})
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseReplaying)
	gate.cut()
	// Long enough for controller-runtime's backoff (5 ms, doubling) to
	// grow past 10 s between two tries.
	time.Sleep(25 * time.Second)
	if m := w.get(name); m.Status.Phase != v1alpha1.PhaseReplaying {
		t.Fatalf("phase %s while the broker was away (%s: %s)", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
	}
	gate.set(false)
	w.sim.release("replay")
	back := time.Now()
	m := w.waitCompleted(name)
	// The backoff would have waited another 16 s before its next try; a
	// retry every second finishes in a few.
	if took := time.Since(back); took > 12*time.Second {
		t.Errorf("completed %s after the broker came back: retried on a growing backoff", took.Round(time.Millisecond))
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// One migration per pod at a time: a second migration of a pod that one
// is migrating is refused in Pending, naming the first, and the first
// goes on untouched.
func TestSecondMigrationOfAPodIsRefused(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.produce(50)
	w.sim.hold("checkpoint")
	w.startManager()
	first, second := w.b.Name("first"), w.b.Name("second")
	w.migration(first, "consumer-0", nil)
	w.waitPhase(first, migrationTimeout, v1alpha1.PhaseCheckpointing)
	w.migration(second, "consumer-0", nil)
	m2 := w.waitPhase(second, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
	if m2.Status.FailureReason != v1alpha1.ReasonConcurrentMigration || !strings.Contains(m2.Status.FailureMessage, first) {
		t.Errorf("second migration: phase %s, %s: %s; want %s naming %s", m2.Status.Phase, m2.Status.FailureReason, m2.Status.FailureMessage,
			v1alpha1.ReasonConcurrentMigration, first)
	}
	w.sim.release("checkpoint")
	m1 := w.waitPhase(first, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m1.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("first migration: %s: %s", m1.Status.FailureReason, m1.Status.FailureMessage)
	}
	w.checkExactlyOnce(m1.Status.TargetPod)
}

// The source is the pod the migration started with, by UID: a pod that
// takes its name meanwhile (here, made by hand; as well another
// migration's target, or its owner's replacement) is never deleted as
// the source.
func TestPodThatTookTheSourcesNameIsNotStopped(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	src := w.sourcePod("consumer-0")
	w.produce(50)
	w.sim.hold("replay")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.ReplayMode = v1alpha1.ReplayDrain })
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseReplaying)
	if err := k8s.Delete(ctx, src); err != nil {
		t.Fatal(err)
	}
	sdktest.Eventually(t, 10*time.Second, "source gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(src), &corev1.Pod{}))
	})
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "consumer-0", Namespace: w.ns, Labels: map[string]string{"app": "other"}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "other", Image: "sim/other:1"}}}}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	w.sim.release("replay")
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	got := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(other), got); err != nil || got.UID != other.UID || !got.DeletionTimestamp.IsZero() {
		t.Fatalf("the pod that took the source's name was stopped as the source (err %v, deleting %v)", err, got.DeletionTimestamp)
	}
}

// A Sequential migration whose restore fails past the point of no return
// fails forward, and takes its replay topology with it: nobody would ever
// consume the replay queue, which would fill until the broker blocked
// every publisher.
func TestFailingForwardRemovesTheReplayTopologyAndCheckpoint(t *testing.T) {
	for _, engine := range []v1alpha1.CheckpointEngine{v1alpha1.CheckpointEngineKubelet, v1alpha1.CheckpointEngineRunc} {
		t.Run(string(engine), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.sourcePod("consumer-0")
			w.produce(50)
			before := w.topology()
			w.sim.badRestore["consumer-0"] = true
			w.startManager()
			name := w.b.Name("mig")
			w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
				s.MigrationStrategy, s.CheckpointEngine = v1alpha1.StrategySequential, engine
			})
			m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
			if m.Status.Phase != v1alpha1.PhaseFailed || !migration.PastPointOfNoReturn(&m.Status) {
				t.Fatalf("phase %s (%s: %s): want a failure past the point of no return", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
			}
			if after := w.topology(); !slices.Equal(before, after) {
				t.Errorf("broker topology left changed:\nbefore %v\nafter  %v", before, after)
			}
			// Nothing will restore from the checkpoint any more: it goes.
			if !meta(m, v1alpha1.ConditionCheckpointRemoved) {
				t.Errorf("CheckpointRemoved not True after failing forward: %v", m.Status.Conditions)
			}
			w.sim.mu.Lock()
			cleanA, cleanB := w.sim.cleanups["node-a"], w.sim.cleanups["node-b"]
			w.sim.mu.Unlock()
			if cleanA == 0 || cleanB == 0 {
				t.Errorf("cleanups node-a %d node-b %d", cleanA, cleanB)
			}
		})
	}
}

// A restored container that dies after the migration is not brought back
// with the checkpoint's out-of-date state, and the migration says what
// happened to the state it moved.
func TestRestoredExitAfterCompletionIsReported(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.produce(50)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	m := w.waitCompleted(name)
	w.sim.crash(context.Background(), m.Status.TargetPod)
	sdktest.Eventually(t, 10*time.Second, "RestoredStateLost and its Warning", func() bool {
		m := w.get(name)
		return meta(m, v1alpha1.ConditionRestoredStateLost) && slices.Contains(w.events(name), v1alpha1.ConditionRestoredStateLost)
	})
	c := apimeta.FindStatusCondition(w.get(name).Status.Conditions, v1alpha1.ConditionRestoredStateLost)
	if !strings.Contains(c.Message, "OOMKilled") || !strings.Contains(c.Message, "not restored again") {
		t.Errorf("RestoredStateLost: %s", c.Message)
	}
	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, target); err != nil {
		t.Errorf("the dead pod of a source without owner is its only record, and was removed: %v", err)
	} else if target.Status.Phase != corev1.PodFailed {
		t.Errorf("dead target is %s", target.Status.Phase)
	}
}

// A restored pod deleted on purpose after completion (a rollout, a drain)
// stops as any pod does: that is not its state lost.
func TestDeletedTargetIsNotReportedLost(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.sourcePod("consumer-0")
	w.produce(50)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	m := w.waitCompleted(name)
	w.sim.hold("stop-source") // the kubelet keeps the terminating pod
	target := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, target, client.GracePeriodSeconds(30)); err != nil {
		t.Fatal(err)
	}
	// What the kubelet reports once the container has stopped on SIGTERM.
	sdktest.Eventually(t, 10*time.Second, "the terminating target's container reported stopped", func() bool {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(target), p); err != nil || p.DeletionTimestamp.IsZero() {
			return false
		}
		p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 143, Reason: "Error"}}
		return k8s.Status().Update(ctx, p) == nil
	})
	time.Sleep(2 * time.Second)
	if meta(w.get(name), v1alpha1.ConditionRestoredStateLost) {
		t.Error("a target deleted on purpose was reported as its restored state lost")
	}
}

// The target's node is lost (its kubelet gone) while the target restores,
// and the migration is aborted: no kubelet will ever confirm the target's
// deletion, so once the node has been not Ready for NodeLostGrace the
// rollback force-deletes it, and ends with the source serving.
func TestRollbackDoesNotWaitOnALostNode(t *testing.T) {
	w := newWorld(t)
	w.opts.NodeLostGrace = time.Second
	before := w.topology()
	w.sourcePod("consumer-0")
	w.produce(100)
	w.sim.mu.Lock()
	w.sim.agents["node-e"] = true
	w.sim.mu.Unlock()
	w.sim.hold("restore")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.TargetNode = "node-e" })
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseRestoring)
	w.loseNode("node-e")
	setAbort(t, w, name)
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
	w.sim.release("restore")
	if m.Status.Phase != v1alpha1.PhaseFailed || !meta(m, v1alpha1.ConditionRolledBack) {
		t.Fatalf("phase %s (%s), rolled back %v", m.Status.Phase, m.Status.FailureReason, meta(m, v1alpha1.ConditionRolledBack))
	}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
		t.Errorf("target pod on the lost node still exists: %v", err)
	}
	sdktest.Eventually(t, 10*time.Second, "a TargetForceDeleted Event", func() bool { return slices.Contains(w.events(name), "TargetForceDeleted") })
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology not restored:\nbefore %v\nafter  %v", before, after)
	}
	w.expectSourceServing("consumer-0")
}

// The source's node dies while the target replays, past the checkpoint:
// the source's deletion is never confirmed and its consumer left before
// the consumer count was taken. Once its node has been lost for
// NodeLostGrace and the broker lists no consumer of it, the source is
// force-deleted and the migration completes, every message applied once.
func TestSourceLostWithItsNodeDoesNotHoldTheCutover(t *testing.T) {
	w := newWorld(t)
	w.opts.NodeLostGrace = time.Second
	w.sim.mu.Lock()
	w.sim.agents["node-e"] = true
	w.sim.mu.Unlock()
	w.sourcePodOn("consumer-0", "node-e")
	w.produce(50)
	w.sim.hold("replay")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseReplaying)
	w.loseNode("node-e")
	w.sim.release("replay")
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("migration %s: %s: %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
	}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0"}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
		t.Errorf("the source on the lost node still exists: %v", err)
	}
	sdktest.Eventually(t, 10*time.Second, "a SourceForceDeleted Event", func() bool { return slices.Contains(w.events(name), "SourceForceDeleted") })
	w.checkExactlyOnce(m.Status.TargetPod)
}

// loseNode makes node's kubelet go (its pods' processes die, their
// deletions are never confirmed) and the node not Ready, until the test
// ends.
func (w *world) loseNode(node string) {
	w.t.Helper()
	w.sim.mu.Lock()
	w.sim.lost[node] = true
	w.sim.mu.Unlock()
	setNodeReady(w.t, node, false)
	w.t.Cleanup(func() { setNodeReady(w.t, node, true) })
}

// setNodeReady sets a node's Ready condition, as its kubelet's heartbeat
// or the node lifecycle controller would.
func setNodeReady(t *testing.T, name string, ready bool) {
	t.Helper()
	n := &corev1.Node{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, n); err != nil {
		t.Fatal(err)
	}
	st, reason := corev1.ConditionTrue, "KubeletReady"
	if !ready {
		st, reason = corev1.ConditionUnknown, "NodeStatusUnknown"
	}
	// The transition is backdated: the node has been lost a while.
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, Reason: reason,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Minute))}}
	if err := k8s.Status().Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}
