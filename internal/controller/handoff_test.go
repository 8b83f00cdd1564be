package controller_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
)

// handoffSpec asks for the Handoff technique (the runc engine holds the
// source at its checkpoint).
func handoffSpec(s *v1alpha1.StatefulMigrationSpec) {
	s.Handoff = v1alpha1.HandoffHandoff
	s.CheckpointEngine = v1alpha1.CheckpointEngineRunc
}

// tryConsume attaches a consumer to the primary queue, as a thawed source
// reconnecting would, and reports the broker's answer.
func (w *world) tryConsume() error {
	w.t.Helper()
	conn, err := amqp.Dial(w.amqpURL)
	if err != nil {
		w.t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		w.t.Fatal(err)
	}
	if err := ch.Qos(1, 0, false); err != nil {
		w.t.Fatal(err)
	}
	_, err = ch.Consume(w.queue, "", false, false, false, false, nil)
	return err
}

// handoffHeldInTransfer starts a ShadowPod Handoff of a consuming source
// and returns once it is held in Transferring (the topology before it, the
// migration's name, and what stops the manager).
func handoffHeldInTransfer(t *testing.T) (w *world, before []string, name string, stop func()) {
	w = newWorld(t)
	before = w.topology()
	w.sourcePod("consumer-0")
	w.produce(100)
	time.Sleep(time.Second)
	w.sim.hold("transfer")
	stop = w.startManager()
	name = w.b.Name("mig")
	w.migration(name, "consumer-0", handoffSpec)
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseTransferring, v1alpha1.PhaseFailed)
	return w, before, name, stop
}

// A ShadowPod Handoff: the source is held at its checkpoint, its consumer
// disconnected, the queue locked, the source thawed; the target takes the
// queue directly once the source is gone. No replay queue is fed, and the
// target has every message exactly once.
func TestShadowPodHandoffTakesTheQueueFromTheHeldSource(t *testing.T) {
	w, before, name, _ := handoffHeldInTransfer(t)
	m := w.get(name)
	if m.Status.Phase != v1alpha1.PhaseTransferring {
		t.Fatalf("failed: %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
	}
	st := &m.Status
	if st.Plan.Handoff != v1alpha1.HandoffHandoff || !st.Plan.HoldSource || !migration.IsTrue(st, v1alpha1.ConditionSourceQuiesced) || !st.Broker.PrimaryLocked {
		t.Errorf("handoff %q (%s), hold %v, quiesced %v, locked %v", st.Plan.Handoff, st.Plan.HandoffReason, st.Plan.HoldSource,
			migration.IsTrue(st, v1alpha1.ConditionSourceQuiesced), st.Broker.PrimaryLocked)
	}
	// The thawed source, reconnecting, is refused the queue.
	var ae *amqp.Error
	if err := w.tryConsume(); !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Errorf("consuming the locked queue: %v; want ACCESS_REFUSED", err)
	}
	w.sim.release("transfer")
	m = w.waitCompleted(name)
	st = &m.Status
	if st.Messages != nil && st.Messages.Buffered != 0 {
		t.Errorf("%d message(s) went through a replay queue; the Handoff feeds none", st.Messages.Buffered)
	}
	if st.Broker.PrimaryLocked {
		t.Errorf("the queue is still recorded locked after the cutover")
	}
	w.checkExactlyOnce(st.TargetPod)
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
	if err := w.tryConsume(); err != nil {
		t.Errorf("the queue is still locked after the migration: %v", err)
	}
}

// A Handoff whose lock is lost while the thawed source serves (the manager
// restarted, and the source reconnected in between) cannot go on: the
// source has taken messages the checkpoint lacks. It rolls back, and the
// source, which kept serving, has every message exactly once.
func TestHandoffLockLostRollsBack(t *testing.T) {
	w, before, name, stop := handoffHeldInTransfer(t)
	stop()
	// the source's reconnects (every 200 ms at most) take the queue
	time.Sleep(time.Second)
	w.startManager()
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != v1alpha1.ReasonHandoffLockLost {
		t.Fatalf("phase %s (%s: %s); want Failed with %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage, v1alpha1.ReasonHandoffLockLost)
	}
	if !migration.IsTrue(&m.Status, v1alpha1.ConditionRolledBack) {
		t.Errorf("not rolled back")
	}
	w.sim.release("transfer")
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
	w.expectSourceServing("consumer-0")
}
