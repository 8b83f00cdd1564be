package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// policyFor creates a MigrationPolicy that governs the world's namespace
// only (policies are cluster-scoped and the tests share an API server).
func (w *world) policyFor(spec v1alpha1.MigrationPolicySpec) *v1alpha1.MigrationPolicy {
	w.t.Helper()
	spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: w.ns}}
	p := &v1alpha1.MigrationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "policy-" + w.ns}, Spec: spec}
	if err := k8s.Create(context.Background(), p); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	return p
}

// plainPod starts a pod on node-a that the migration moves without a
// message stream.
func (w *world) plainPod(name string) {
	w.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns, Labels: map[string]string{"app": "consumer"}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "consumer", Image: imageConsumer}}}}
	if err := k8s.Create(context.Background(), p); err != nil {
		w.t.Fatal(err)
	}
	sdktest.Eventually(w.t, 10*time.Second, name+" running", func() bool { return w.sim.pod(name) != nil })
}

func withoutBroker(s *v1alpha1.StatefulMigrationSpec) { s.MessageQueueConfig = nil }

// A policy that lets one migration at a time leave a node makes the second
// wait in Pending, saying for what, and start once the first has ended.
// Both run with the policy's defaults as the policy was when each started:
// a policy changed meanwhile changes only the one still waiting.
func TestPolicyLimitsOutboundMigrationsPerNode(t *testing.T) {
	w := newWorld(t)
	w.plainPod("first")
	w.plainPod("second")
	pol := w.policyFor(v1alpha1.MigrationPolicySpec{
		Limits: &v1alpha1.MigrationLimits{ParallelOutboundMigrationsPerNode: ptr.To[int32](1), BandwidthPerMigration: ptr.To(resource.MustParse("64Mi"))},
		Defaults: &v1alpha1.MigrationDefaults{TransferMode: v1alpha1.TransferDirect,
			Timeouts: &v1alpha1.MigrationTimeouts{Restore: &metav1.Duration{Duration: 77 * time.Second}, Progress: &metav1.Duration{Duration: 90 * time.Second}}},
	})
	w.sim.hold("checkpoint")
	w.startManager()
	one, two := w.b.Name("one"), w.b.Name("two")
	w.migration(one, "first", withoutBroker)
	w.waitPhase(one, migrationTimeout, v1alpha1.PhaseCheckpointing)
	w.migration(two, "second", withoutBroker)

	var queued *metav1.Condition
	sdktest.Eventually(t, 20*time.Second, "the second migration queued", func() bool {
		queued = apimeta.FindStatusCondition(w.get(two).Status.Conditions, v1alpha1.ConditionQueued)
		return queued != nil && queued.Status == metav1.ConditionTrue
	})
	if queued.Reason != v1alpha1.ReasonParallelismLimit || !strings.Contains(queued.Message, "MigrationPolicy "+pol.Name+" allows 1 migration(s) at once out of node node-a") ||
		!strings.Contains(queued.Message, w.ns+"/"+one) {
		t.Fatalf("Queued: %s: %s", queued.Reason, queued.Message)
	}
	// It keeps waiting while the first runs.
	time.Sleep(time.Second)
	if m := w.get(two); m.Status.Phase != v1alpha1.PhasePending {
		t.Fatalf("the second migration started (%s) while the first still runs", m.Status.Phase)
	}
	if !contains(w.events(two), v1alpha1.ConditionQueued) {
		t.Errorf("no Queued Event for %s: %v", two, w.events(two))
	}

	// The admin changes the policy while the first runs and the second waits.
	sdktest.Eventually(t, 10*time.Second, "policy updated", func() bool {
		cur := &v1alpha1.MigrationPolicy{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(pol), cur); err != nil {
			return false
		}
		cur.Spec.Defaults.TransferMode = v1alpha1.TransferRegistry
		return k8s.Update(context.Background(), cur) == nil
	})

	w.sim.release("checkpoint")
	first := w.waitCompleted(one)
	second := w.waitCompleted(two)

	if p := first.Status.Plan; p.Policy != pol.Name || p.PolicyGeneration != 1 || p.TransferMode != v1alpha1.TransferDirect ||
		p.Timeouts == nil || p.Timeouts.Restore.Duration != 77*time.Second || p.Timeouts.Total.Duration != v1alpha1.DefaultTotalTimeout {
		t.Errorf("first plan: policy %s/%d, transfer %s, timeouts %+v", p.Policy, p.PolicyGeneration, p.TransferMode, p.Timeouts)
	}
	if p := first.Status.Plan; p.BandwidthBytesPerSecond != 64<<20 || p.Timeouts.Progress == nil || p.Timeouts.Progress.Duration != 90*time.Second ||
		!strings.Contains(p.BandwidthReason, "bandwidthPerMigration (64Mi/s)") {
		t.Errorf("first plan: bandwidth %d (%s), progress timeout %v", p.BandwidthBytesPerSecond, p.BandwidthReason, p.Timeouts.Progress)
	}
	w.sim.mu.Lock()
	paced := w.sim.paced[first.Status.Checkpoint.ID]
	w.sim.mu.Unlock()
	if paced != 64<<20 {
		t.Errorf("the transfer was asked to go at %d bytes/s, not the policy's 64Mi", paced)
	}
	if p := second.Status.Plan; p.Policy != pol.Name || p.PolicyGeneration != 2 || p.TransferMode != v1alpha1.TransferRegistry ||
		p.CheckpointRepository != "registry.test/ckpt" {
		t.Errorf("second plan (resolved after the policy changed): policy %s/%d, transfer %s to %q", p.Policy, p.PolicyGeneration, p.TransferMode, p.CheckpointRepository)
	}
	if c := apimeta.FindStatusCondition(second.Status.Conditions, v1alpha1.ConditionQueued); c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonAdmitted {
		t.Errorf("Queued after the start: %+v", c)
	}
	firstEnd := phaseTiming(first, v1alpha1.PhaseFinalizing).End
	secondStart := phaseTiming(second, v1alpha1.PhaseCheckpointing).Start
	if firstEnd == nil || secondStart.Before(firstEnd) {
		t.Errorf("the second migration started at %s, before the first ended at %v", secondStart.Time, firstEnd)
	}
}

// What a policy does not allow fails the migration in Pending, saying what
// to change, and leaves the source as it was.
func TestPolicyRefusesWhatItDoesNotAllow(t *testing.T) {
	w := newWorld(t)
	w.plainPod("consumer-0")
	w.policyFor(v1alpha1.MigrationPolicySpec{
		Allowed: &v1alpha1.MigrationAllowances{MemoryTechniques: []v1alpha1.MemoryTechnique{v1alpha1.MemoryStopAndCopy}},
	})
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		withoutBroker(s)
		s.MemoryTechnique = v1alpha1.MemoryPostCopy
	})
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
	if m.Status.FailureReason != v1alpha1.ReasonNotAllowedByPolicy || m.Status.FailedPhase != v1alpha1.PhasePending ||
		!strings.Contains(m.Status.FailureMessage, "allows memory techniques [StopAndCopy] only; this migration's plan has PostCopy") ||
		!strings.Contains(m.Status.FailureMessage, "set spec.memoryTechnique") {
		t.Fatalf("%s in %s: %s", m.Status.FailureReason, m.Status.FailedPhase, m.Status.FailureMessage)
	}
	src := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0"}, src); err != nil || !src.DeletionTimestamp.IsZero() {
		t.Fatalf("source pod after the refusal: %v", err)
	}
	w.sim.mu.Lock()
	snaps := len(w.sim.snapshots)
	w.sim.mu.Unlock()
	if snaps != 0 {
		t.Fatalf("%d checkpoints taken for a refused migration", snaps)
	}
	if migration.IsTrue(&m.Status, v1alpha1.ConditionTargetPrepared) {
		t.Fatal("a target was prepared for a refused migration")
	}
}

func phaseTiming(m *v1alpha1.StatefulMigration, p v1alpha1.Phase) v1alpha1.PhaseTiming {
	for _, t := range m.Status.PhaseTimings {
		if t.Phase == p {
			return t
		}
	}
	return v1alpha1.PhaseTiming{}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Migrations created at once under a limit of one: the manager reconciles
// several migrations in parallel, and still only one holds the slot at any
// time; the others start one after another as each ends.
func TestPolicyLimitHoldsForMigrationsCreatedAtOnce(t *testing.T) {
	w := newWorld(t)
	pods := []string{"p-0", "p-1", "p-2"}
	for _, p := range pods {
		w.plainPod(p)
	}
	w.policyFor(v1alpha1.MigrationPolicySpec{Limits: &v1alpha1.MigrationLimits{ParallelMigrationsPerCluster: ptr.To[int32](1)}})
	w.sim.hold("checkpoint")
	w.startManager()
	var names []string
	for _, p := range pods {
		name := w.b.Name("m-" + p)
		names = append(names, name)
		w.migration(name, p, withoutBroker)
	}
	running := func() (n int, phases []string) {
		for _, name := range names {
			ph := w.get(name).Status.Phase
			phases = append(phases, string(ph))
			if ph != "" && ph != v1alpha1.PhasePending && !ph.IsFinal() {
				n++
			}
		}
		return n, phases
	}
	// While the first is held in Checkpointing, nothing else starts.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n, phases := running(); n > 1 {
			t.Fatalf("%d migrations run at once under a limit of 1: %v", n, phases)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, phases := running(); n != 1 {
		t.Fatalf("%d migrations run, want the one held: %v", n, phases)
	}
	w.sim.release("checkpoint")
	for _, name := range names {
		w.waitCompleted(name)
	}
	// One after another: each started after the one before it ended.
	type span struct{ start, end time.Time }
	var spans []span
	for _, name := range names {
		m := w.get(name)
		s := span{start: phaseTiming(m, v1alpha1.PhaseCheckpointing).Start.Time}
		if e := phaseTiming(m, v1alpha1.PhaseFinalizing).End; e != nil {
			s.end = e.Time
		}
		spans = append(spans, s)
	}
	for i := range spans {
		for j := range spans {
			if i != j && spans[i].start.Before(spans[j].end) && spans[j].start.Before(spans[i].end) {
				t.Errorf("%s and %s overlapped: %v / %v", names[i], names[j], spans[i], spans[j])
			}
		}
	}
}
