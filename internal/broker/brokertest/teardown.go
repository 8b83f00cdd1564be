package brokertest

import (
	"github.com/ms2m/ms2m/sdk/control"
	"reflect"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func runTeardown(t *testing.T, env Env) {
	t.Run("Twice", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		h := dial(t, env, s, migrationID(s, "t"))
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
		must(t, "second Teardown", h.Teardown(ctx(t), &rec))
		wantTornDown(t, &rec)
		wantSameTopology(t, "after two Teardowns", before, env.Snapshot(t, s))
	})

	t.Run("WithoutPrepare", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		must(t, "Teardown", dial(t, env, s, migrationID(s, "t")).Teardown(ctx(t), &v1alpha1.BrokerStatus{}))
		must(t, "Teardown of a nil record", dial(t, env, s, migrationID(s, "t")).Teardown(ctx(t), nil))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	// The controller saves the record after a call returns: a crash in
	// between loses what the call noted. Teardown with an empty record
	// must still leave nothing of the migration behind.
	t.Run("CrashAfterPrepare", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		id := migrationID(s, "t")
		lost := dial(t, env, s, id)
		must(t, "Prepare", lost.Prepare(ctx(t), &v1alpha1.BrokerStatus{}))
		env.Publish(t, s, bodies("m", 2)...)
		must(t, "Close", lost.Close())

		var rec v1alpha1.BrokerStatus
		must(t, "Teardown with an empty record", dial(t, env, s, id).Teardown(ctx(t), &rec))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	// A control queue is named after its pod, not the migration: after a
	// crash the controller removes it with DeleteControlQueue, as it does
	// for every target pod it gives up.
	t.Run("CrashAfterStartReplay", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		id, pod := migrationID(s, "t"), podName(s, "target")
		lost := dial(t, env, s, id)
		var lostRec v1alpha1.BrokerStatus
		must(t, "Prepare", lost.Prepare(ctx(t), &lostRec))
		must(t, "StartReplay", lost.StartReplay(ctx(t), control.QueueName(pod), &lostRec))
		must(t, "Close", lost.Close())

		h := dial(t, env, s, id)
		must(t, "Teardown with an empty record", h.Teardown(ctx(t), &v1alpha1.BrokerStatus{}))
		must(t, "DeleteControlQueue", h.DeleteControlQueue(ctx(t), control.QueueName(pod)))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	t.Run("ConcurrentMigrations", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		a, b := dial(t, env, s, migrationID(s, "a")), dial(t, env, s, migrationID(s, "b"))
		var recA, recB v1alpha1.BrokerStatus
		must(t, "Prepare a", a.Prepare(ctx(t), &recA))
		must(t, "Prepare b", b.Prepare(ctx(t), &recB))
		if recA.ReplayQueue == recB.ReplayQueue {
			t.Fatalf("two migrations share replay queue %q", recA.ReplayQueue)
		}
		env.Publish(t, s, bodies("both", 3)...)
		must(t, "Seal a", a.Seal(ctx(t), &recA))
		env.Publish(t, s, bodies("b only", 2)...)
		wantReady(t, env, s, recA.ReplayQueue, 3)
		wantReady(t, env, s, recB.ReplayQueue, 5)

		savedB := *recB.DeepCopy()
		must(t, "Teardown a", a.Teardown(ctx(t), &recA))
		if !reflect.DeepEqual(recB, savedB) {
			t.Errorf("a's teardown changed b's record: %+v, was %+v", recB, savedB)
		}
		env.Publish(t, s, "b still")
		wantReady(t, env, s, recB.ReplayQueue, 6)
		wantProgress(t, b, &recB, 6, 6)

		must(t, "Teardown b", b.Teardown(ctx(t), &recB))
		wantSameTopology(t, "after both Teardowns", before, env.Snapshot(t, s))
	})
}
