package controller_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// Post-copy on the simulated nodes: the target runs before its memory has
// all come, so the source (its dump's server, or the source itself held
// frozen) must outlive the page stream. The simulator records a source
// ended early as a violation: on a real node the target would fault on a
// page nobody serves any more, with the state lost.

func postCopySpec(strategy v1alpha1.MigrationStrategy) func(*v1alpha1.StatefulMigrationSpec) {
	return func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.MemoryTechnique = strategy, v1alpha1.MemoryPostCopy
		s.CheckpointEngine, s.TransferMode = v1alpha1.CheckpointEngineRunc, v1alpha1.TransferDirect
	}
}

// migrateProducing starts a migration of a consumer that applies a
// stream of 50 msg/s, begun a moment before; it returns its name.
func (w *world) migrateProducing(spec func(*v1alpha1.StatefulMigrationSpec)) string {
	w.t.Helper()
	w.sourcePod("consumer-0")
	w.produce(50)
	time.Sleep(300 * time.Millisecond)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", spec)
	return name
}

func (w *world) noViolations() {
	w.t.Helper()
	w.sim.mu.Lock()
	defer w.sim.mu.Unlock()
	for _, v := range w.sim.violations {
		w.t.Error(v)
	}
}

func TestPostCopyShadowPodServesUntilTheLastPage(t *testing.T) {
	w := newWorld(t)
	w.sim.pageDelay = 1500 * time.Millisecond
	before := w.topology()
	name := w.migrateProducing(postCopySpec(v1alpha1.StrategyShadowPod))
	// The target runs with pages still to come: the source serves on.
	sdktest.Eventually(t, migrationTimeout, "target restored, its pages coming", func() bool {
		m := w.get(name)
		return meta(m, v1alpha1.ConditionTargetRestored) || m.Status.Phase == v1alpha1.PhaseFailed
	})
	m := w.waitCompleted(name)
	if m.Status.Plan.MemoryTechnique != v1alpha1.MemoryPostCopy {
		t.Fatalf("plan took %s (%s)", m.Status.Plan.MemoryTechnique, m.Status.Plan.MemoryTechniqueReason)
	}
	if !meta(m, v1alpha1.ConditionMemoryTransferred) {
		t.Errorf("completed without MemoryTransferred: %+v", m.Status.Conditions)
	}
	w.noViolations()
	w.checkExactlyOnce(m.Status.TargetPod)
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
}

func TestPostCopySequentialEndsItsSourceAfterTheLastPage(t *testing.T) {
	w := newWorld(t)
	w.sim.pageDelay = 1500 * time.Millisecond
	name := w.migrateProducing(postCopySpec(v1alpha1.StrategySequential))
	m := w.waitCompleted(name)
	if !m.Status.Plan.HoldSource {
		t.Fatalf("a Sequential post-copy source is held at its dump: plan %+v", m.Status.Plan)
	}
	w.noViolations()
	w.sim.mu.Lock()
	ended := w.sim.endedHeld
	w.sim.mu.Unlock()
	if ended != 1 {
		t.Errorf("the held source was ended %d times, want once", ended)
	}
	w.checkExactlyOnce("consumer-0")
}

// A page stream that breaks while the target restores or replays: the
// target stops where it faulted, the migration rolls back, and the source,
// which served on, has applied every message once, in order.
func TestPostCopyPagesLostRollsBackToTheSource(t *testing.T) {
	w := newWorld(t)
	w.sim.losePages = true
	before := w.topology()
	name := w.migrateProducing(postCopySpec(v1alpha1.StrategyShadowPod))
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != v1alpha1.ReasonPagesLost {
		t.Fatalf("phase %s reason %q (%s), want Failed with %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage, v1alpha1.ReasonPagesLost)
	}
	if !meta(m, v1alpha1.ConditionRolledBack) {
		t.Errorf("not rolled back: %+v", m.Status.Conditions)
	}
	w.noViolations()
	src := w.sim.pod("consumer-0")
	if src == nil || src.restored != nil {
		t.Fatal("the source does not serve after the rollback")
	}
	last := w.stopPub()
	refLast, refDigest := w.reference()
	if refLast != last || last == 0 {
		t.Fatalf("producer published up to %d, confirmed up to %d", last, refLast)
	}
	sdktest.Eventually(t, 90*time.Second, "the source applied the last message", func() bool {
		return src.consumer.Snapshot().LastSeq == last
	})
	for i, seq := range src.appliedSeqs() {
		if seq != int64(i)+1 {
			t.Fatalf("the source's %d-th message was seq %d (lost, duplicated or reordered)", i+1, seq)
		}
	}
	if d := src.consumer.Snapshot().Digest.String(); d != refDigest {
		t.Errorf("source digest %s != reference %s", d, refDigest)
	}
	if w.sim.pod(m.Status.TargetPod) != nil {
		t.Errorf("the target %s still runs after the rollback", m.Status.TargetPod)
	}
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
}

// Stream: the target's agent is told to expect the pages before the dump,
// the source's sends them with it, and the staging takes them with the
// archive (the simulated agents refuse any other order).
func TestStreamSendsThePagesWithTheDump(t *testing.T) {
	for _, strategy := range []v1alpha1.MigrationStrategy{v1alpha1.StrategyShadowPod, v1alpha1.StrategySequential} {
		t.Run(string(strategy), func(t *testing.T) {
			w := newWorld(t)
			before := w.topology()
			name := w.migrateProducing(func(s *v1alpha1.StatefulMigrationSpec) {
				s.MigrationStrategy, s.MemoryTechnique, s.CheckpointEngine = strategy, v1alpha1.MemoryStream, v1alpha1.CheckpointEngineRunc
			})
			m := w.waitCompleted(name)
			if m.Status.Plan.MemoryTechnique != v1alpha1.MemoryStream {
				t.Fatalf("plan took %s (%s)", m.Status.Plan.MemoryTechnique, m.Status.Plan.MemoryTechniqueReason)
			}
			if m.Status.Transfer == nil || m.Status.Transfer.PageBytes != 1<<20 {
				t.Errorf("status.transfer does not count the streamed pages: %+v", m.Status.Transfer)
			}
			w.checkExactlyOnce(m.Status.TargetPod)
			if after := w.topology(); !slices.Equal(before, after) {
				t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}
