package brokertest

import (
	"reflect"
	"slices"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

func runBuffer(t *testing.T, env Env) {
	t.Run("Lifecycle", func(t *testing.T) {
		t.Parallel()
		lifecycle(t, env, env.NewStream(t))
	})

	t.Run("ProgressBeforePrepare", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		env.Publish(t, s, bodies("m", 4)...)
		wantProgress(t, dial(t, env, s, migrationID(s, "p")), &v1alpha1.BrokerStatus{}, 0, 4)
	})

	t.Run("Fence", func(t *testing.T) {
		// fences go to the workload's queue alone, and are counted once
		// the broker has them
		t.Parallel()
		s := env.NewStream(t)
		h := dial(t, env, s, migrationID(s, "f"))
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		env.Publish(t, s, bodies("m", 2)...)
		must(t, "Fence", h.Fence(ctx(t), 3, &rec))
		if rec.FencesSent != 3 {
			t.Errorf("recorded %d fences, want 3", rec.FencesSent)
		}
		wantReady(t, env, s, s.Queue, 5)
		wantReady(t, env, s, rec.ReplayQueue, 2)
		if got := env.Receive(t, s, s.Queue, 5); !slices.Equal(got[:2], bodies("m", 2)) {
			t.Errorf("the queue hands out %q: the fences must come after what was in it", got)
		}
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
	})

	t.Run("DeclareBuffer", func(t *testing.T) {
		// a buffer for a held source: it exists, takes nothing, and goes
		// with the teardown, leaving the topology as it was
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		h := dial(t, env, s, migrationID(s, "d"))
		var rec v1alpha1.BrokerStatus
		must(t, "DeclareBuffer", h.DeclareBuffer(ctx(t), &rec))
		if rec.ReplayQueue == "" {
			t.Fatal("DeclareBuffer recorded no replay queue")
		}
		env.Publish(t, s, bodies("m", 3)...)
		wantReady(t, env, s, s.Queue, 3)
		wantReady(t, env, s, rec.ReplayQueue, 0)
		for q, want := range map[string]int{s.Queue: 3, rec.ReplayQueue: 0, "no-such-queue-" + migrationID(s, "d"): 0} {
			if n, err := h.Waiting(ctx(t), q); err != nil || n != want {
				t.Errorf("Waiting(%s) = %d, %v; want %d", q, n, err, want)
			}
		}
		must(t, "Seal", h.Seal(ctx(t), &rec))
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
		wantSameTopology(t, "after the teardown", before, env.Snapshot(t, s))
	})

	t.Run("PrepareTwice", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		h := dial(t, env, s, migrationID(s, "p"))
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		once, first := *rec.DeepCopy(), env.Snapshot(t, s)
		must(t, "second Prepare", h.Prepare(ctx(t), &rec))
		if !reflect.DeepEqual(rec, once) {
			t.Errorf("second Prepare changed the record:\n%+v\nafter the first:\n%+v", rec, once)
		}
		wantSameTopology(t, "after the second Prepare", first, env.Snapshot(t, s))
		env.Publish(t, s, bodies("m", 3)...)
		wantReady(t, env, s, rec.ReplayQueue, 3)
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
	})

	t.Run("PrepareResumes", func(t *testing.T) {
		// a restarted controller opens a new handoff with the saved record
		t.Parallel()
		s := env.NewStream(t)
		id := migrationID(s, "p")
		before := env.Snapshot(t, s)
		var rec v1alpha1.BrokerStatus
		h1 := dial(t, env, s, id)
		must(t, "Prepare", h1.Prepare(ctx(t), &rec))
		must(t, "Close", h1.Close())
		saved := *rec.DeepCopy()

		h2 := dial(t, env, s, id)
		must(t, "Prepare in a new handoff", h2.Prepare(ctx(t), &rec))
		if !reflect.DeepEqual(rec, saved) {
			t.Errorf("Prepare in a new handoff changed the record:\n%+v\nwas:\n%+v", rec, saved)
		}
		env.Publish(t, s, "m")
		wantReady(t, env, s, rec.ReplayQueue, 1)
		must(t, "Teardown", h2.Teardown(ctx(t), &rec))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	t.Run("SealTwice", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		h := dial(t, env, s, migrationID(s, "p"))
		var rec v1alpha1.BrokerStatus
		must(t, "Seal before Prepare", h.Seal(ctx(t), &rec))
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		env.Publish(t, s, "in")
		must(t, "Seal", h.Seal(ctx(t), &rec))
		must(t, "second Seal", h.Seal(ctx(t), &rec))
		env.Publish(t, s, "out")
		wantReady(t, env, s, rec.ReplayQueue, 1)
		wantReady(t, env, s, s.Queue, 2)
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
	})
}

// lifecycle is one migration's course, checked at every step: what the
// producer publishes from Prepare to Seal is in the buffer, in order, and
// nothing else; the workload's queue gets everything; teardown leaves no
// trace.
func lifecycle(t *testing.T, env Env, s broker.Stream) {
	before := env.Snapshot(t, s)
	h := dial(t, env, s, migrationID(s, "life"))
	env.Publish(t, s, bodies("applied", 2)...)
	_, err := h.Verify(ctx(t))
	must(t, "Verify", err)

	var rec v1alpha1.BrokerStatus
	must(t, "Prepare", h.Prepare(ctx(t), &rec))
	if rec.ReplayQueue == "" {
		t.Fatalf("Prepare recorded no replay queue: %+v", rec)
	}
	if len(rec.AddedBindings) == 0 || len(rec.DeclaredQueues) == 0 {
		t.Errorf("Prepare did not record its changes: %+v", rec)
	}
	during := bodies("during", 5)
	env.Publish(t, s, during...)
	wantReady(t, env, s, rec.ReplayQueue, 5)
	wantReady(t, env, s, s.Queue, 7)
	wantProgress(t, h, &rec, 5, 7)

	must(t, "Seal", h.Seal(ctx(t), &rec))
	env.Publish(t, s, bodies("sealed", 3)...)
	wantReady(t, env, s, rec.ReplayQueue, 5)
	wantReady(t, env, s, s.Queue, 10)
	wantProgress(t, h, &rec, 5, 10)
	if got := env.Receive(t, s, rec.ReplayQueue, 5); !slices.Equal(got, during) {
		t.Errorf("replay queue held %q, want %q", got, during)
	}

	must(t, "Teardown", h.Teardown(ctx(t), &rec))
	wantTornDown(t, &rec)
	wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	env.Publish(t, s, "after teardown")
	wantReady(t, env, s, s.Queue, 11)
}

func wantReady(t *testing.T, env Env, s broker.Stream, queue string, n int64) {
	t.Helper()
	if got := env.Ready(t, s, queue); got != n {
		t.Errorf("queue %s holds %d ready messages, want %d", queue, got, n)
	}
}

// wantProgress checks the adapter's own counts: Ready must be exact.
func wantProgress(t *testing.T, h broker.Handoff, rec *v1alpha1.BrokerStatus, buffer, primary int64) {
	t.Helper()
	p, err := h.Progress(ctx(t), rec)
	must(t, "Progress", err)
	if p.Buffer.Ready != buffer || p.Primary.Ready != primary {
		t.Errorf("Progress: buffer %d, primary %d ready; want %d and %d", p.Buffer.Ready, p.Primary.Ready, buffer, primary)
	}
}

func wantTornDown(t *testing.T, rec *v1alpha1.BrokerStatus) {
	t.Helper()
	if len(rec.AddedBindings)+len(rec.RemovedBindings)+len(rec.DeclaredQueues) != 0 {
		t.Errorf("Teardown left entries in the record: %+v", rec)
	}
}

// wantSameTopology compares snapshots and names the lines that differ.
func wantSameTopology(t *testing.T, when string, before, after []string) {
	t.Helper()
	var gone, added []string
	for _, l := range before {
		if !slices.Contains(after, l) {
			gone = append(gone, l)
		}
	}
	for _, l := range after {
		if !slices.Contains(before, l) {
			added = append(added, l)
		}
	}
	if len(gone)+len(added) > 0 {
		t.Errorf("topology changed %s:\n  gone:  %q\n  added: %q", when, gone, added)
	}
}
