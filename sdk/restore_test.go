package sdk_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// What a CRIU restore looks like from inside the process, minus CRIU: the
// identity files change under a running consumer. It must leave the primary
// queue at once, move to the new pod's control queue, ignore an END_REPLAY
// that comes first, and finish the handoff exactly once when told.
func TestRestoreDetectedByIdentity(t *testing.T) {
	b := broker(t)
	ex, key := b.Name("orders"), "orders"
	primary, replay := b.Name("orders"), b.Name("orders.replay")
	podA, podB := b.Name("consumer-0"), b.Name("consumer-0")+"-b"
	b.Exchange(t, ex)
	b.Queue(t, primary)
	b.Bind(t, primary, ex, key)
	b.DeleteAtCleanup(t, control.QueueName(podA))
	b.DeleteAtCleanup(t, control.QueueName(podB))

	dir := t.TempDir()
	var app recorder
	var restoredTo sdk.Identity
	c := start(t, sdk.Config{URL: b.URL, Queue: primary, Handler: app.handle, Prefetch: 5,
		Identity: identity(t, dir, "uid-a", podA),
		Hooks:    sdk.Hooks{Restored: func(_, to sdk.Identity) { restoredTo = to }}})
	p := startProducer(t, b.URL, ex, key, "", 100)
	sdktest.Eventually(t, 10*time.Second, "applying", func() bool { return c.Snapshot().LastSeq >= 30 })
	if q := b.Inspect(t, control.QueueName(podA)); q.Consumers != 1 {
		t.Fatalf("control queue of %s has %d consumers, want 1", podA, q.Consumers)
	}
	b.Queue(t, replay)
	b.Bind(t, replay, ex, key)
	bound := p.lastConfirmed()
	sdktest.Eventually(t, 10*time.Second, "past the bind", func() bool { return c.Snapshot().LastSeq >= bound+10 })

	restoredAt := time.Now()
	identity(t, dir, "uid-b", podB) // the "restore"
	sdktest.Eventually(t, 2*time.Second, "primary queue left", func() bool {
		return c.Mode() == sdk.AwaitingReplay && b.Inspect(t, primary).Consumers == 0
	})
	t.Logf("restore noticed and primary queue left in %s", time.Since(restoredAt).Round(time.Millisecond))
	sdktest.Eventually(t, 5*time.Second, "on the new control queue", func() bool {
		return b.Inspect(t, control.QueueName(podB)).Consumers == 1 &&
			c.Status().ControlQueue == control.QueueName(podB)
	})
	if q := b.Inspect(t, control.QueueName(podA)); q.Consumers != 0 {
		t.Fatalf("still consuming the old pod's control queue")
	}
	if restoredTo != (sdk.Identity{UID: "uid-b", Name: podB}) {
		t.Fatalf("Restored hook saw %+v", restoredTo)
	}
	stalled := c.Snapshot()
	time.Sleep(300 * time.Millisecond)
	if now := c.Snapshot(); !reflect.DeepEqual(now, stalled) {
		t.Fatalf("applied messages while awaiting replay: %+v -> %+v", stalled, now)
	}

	// Out of place: the replay queue is unknown, so it must wait.
	b.SendControl(t, podB, control.NewEndReplay())
	sdktest.Eventually(t, 5*time.Second, "END_REPLAY ignored", func() bool { return c.Counters().ControlIgnored == 1 })
	if c.Mode() != sdk.AwaitingReplay {
		t.Fatalf("mode %s after an END_REPLAY without START_REPLAY", c.Mode())
	}

	b.SendControl(t, podB, control.NewStartReplay(replay, ""))
	sdktest.Eventually(t, 10*time.Second, "replaying", func() bool { return c.Counters().Replayed > 0 })
	b.Unbind(t, replay, ex, key)
	sdktest.Eventually(t, 10*time.Second, "replay queue drained", func() bool { return b.Inspect(t, replay).Ready == 0 })
	b.SendControl(t, podB, control.NewEndReplay())
	sdktest.Eventually(t, 10*time.Second, "back on the primary queue", func() bool {
		return c.Mode() == sdk.Primary && b.Inspect(t, primary).Consumers == 1
	})
	time.Sleep(300 * time.Millisecond)

	n, ref := p.stop(t)
	sdktest.Eventually(t, 10*time.Second, "caught up", func() bool { return c.Snapshot().LastSeq >= n })
	time.Sleep(200 * time.Millisecond)
	expectRun(t, "consumer", app.applied(), 1, n)
	expectExactlyOnce(t, "consumer", c.Consumer, n, ref)
	if k := c.Counters(); k.Restores != 1 || k.Duplicates == 0 {
		t.Errorf("counters %+v: want one restore and some duplicates skipped", k)
	}
}
