package sdk_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// A whole ShadowPod handoff with the node side played in-process: the
// "checkpoint" is a Snapshot of the source, the "restore" a consumer built
// from it in another pod. Every confirmed message must be applied exactly
// once across the two, in order, and the target's digest must equal the
// producer's reference.
func TestHandoffExactlyOnce(t *testing.T) {
	b := broker(t)
	ex, key := b.Name("orders"), "orders"
	primary, replay := b.Name("orders"), b.Name("orders.replay")
	podA, podB := b.Name("consumer-0"), b.Name("consumer-0-target")
	b.Exchange(t, ex)
	b.Queue(t, primary)
	b.Bind(t, primary, ex, key)
	b.DeleteAtCleanup(t, control.QueueName(podA))
	b.DeleteAtCleanup(t, control.QueueName(podB))

	var appA, appB recorder
	a := start(t, sdk.Config{URL: b.URL, Queue: primary, Handler: appA.handle,
		Identity: identity(t, t.TempDir(), "uid-a", podA)})
	p := startProducer(t, b.URL, ex, key, "", 100)
	sdktest.Eventually(t, 10*time.Second, "source applying", func() bool { return a.Snapshot().LastSeq >= 30 })

	// Prepare: the replay queue is bound before the checkpoint and the
	// source has applied past its first message, so it holds everything
	// after the checkpoint (and some of what came before).
	b.Queue(t, replay)
	b.Bind(t, replay, ex, key)
	bound := p.lastConfirmed()
	sdktest.Eventually(t, 10*time.Second, "source past the bind", func() bool { return a.Snapshot().LastSeq >= bound+10 })

	snap := a.Snapshot() // the checkpoint
	t.Logf("checkpoint at seq %d (replay queue bound after seq %d)", snap.LastSeq, bound)
	tgt := start(t, sdk.Config{URL: b.URL, Queue: primary, Handler: appB.handle, Restore: &snap,
		Identity: identity(t, t.TempDir(), "uid-b", podB)})

	sdktest.Eventually(t, 10*time.Second, "target on its control queue", func() bool {
		return b.Inspect(t, control.QueueName(podB)).Consumers == 1
	})
	time.Sleep(500 * time.Millisecond) // 50 messages' worth of chances to misbehave
	if q := b.Inspect(t, primary); q.Consumers != 1 {
		t.Fatalf("primary queue has %d consumers while the target awaits replay, want the source only", q.Consumers)
	}
	if k := tgt.Counters(); k.Applied != 0 || tgt.Mode() != sdk.AwaitingReplay {
		t.Fatalf("target before START_REPLAY: mode %s, applied %d", tgt.Mode(), k.Applied)
	}

	reports := b.Name("reports")
	b.Queue(t, reports)
	b.SendControl(t, podB, control.NewStartReplay(replay, reports))
	sdktest.Eventually(t, 10*time.Second, "target replaying", func() bool {
		return tgt.Mode() == sdk.Replaying && tgt.Counters().Replayed > 0
	})
	if r := b.Report(t, reports); r.Type != control.ReplayStarted || r.Pod != podB || r.ReplayQueue != replay {
		t.Fatalf("first report %+v, want %s from %s for %s", r, control.ReplayStarted, podB, replay)
	}

	a.stop() // the source goes; what it left unacked returns to the primary queue
	b.Unbind(t, replay, ex, key)
	sdktest.Eventually(t, 10*time.Second, "replay queue drained", func() bool { return b.Inspect(t, replay).Ready == 0 })
	if q := b.Inspect(t, primary); q.Consumers != 0 {
		t.Fatalf("primary queue has %d consumers during the replay, want none", q.Consumers)
	}

	b.SendControl(t, podB, control.NewEndReplay())
	sdktest.Eventually(t, 10*time.Second, "target on the primary queue", func() bool {
		return tgt.Mode() == sdk.Primary && b.Inspect(t, primary).Consumers == 1
	})
	done := b.Report(t, reports)
	if k := tgt.Counters(); done.Type != control.ReplayDone || done.Gaps != 0 || done.Missing != 0 ||
		done.Replayed == 0 || done.Replayed != k.Replayed || done.Duplicates == 0 || done.Duplicates > k.Duplicates {
		t.Errorf("report at the switch %+v, want %s with no gap and the target's replay counters so far %+v", done, control.ReplayDone, k)
	}
	time.Sleep(500 * time.Millisecond)

	n, ref := p.stop(t)
	sdktest.Eventually(t, 10*time.Second, "target caught up", func() bool { return tgt.Snapshot().LastSeq >= n })
	time.Sleep(200 * time.Millisecond) // anything applied twice would show now

	expectRun(t, "source up to the checkpoint", appA.applied()[:min(int64(len(appA.applied())), snap.LastSeq)], 1, snap.LastSeq)
	expectRun(t, "target", appB.applied(), snap.LastSeq+1, n)
	expectExactlyOnce(t, "target", tgt.Consumer, n, ref)
	if k := tgt.Counters(); k.Duplicates == 0 || k.Replayed == 0 {
		t.Errorf("the handoff exercised no de-duplication or no replay: %+v", k)
	}
}

// A target that finds a hole in the stream while it replays says so at
// once (STREAM_GAP), before END_REPLAY: the controller can still roll back
// to a source that serves.
func TestGapWhileReplayingIsReportedAtOnce(t *testing.T) {
	b := broker(t)
	primary, replay := b.Name("orders"), b.Name("orders.replay")
	pod := b.Name("consumer-0-target")
	b.Queue(t, primary)
	b.Queue(t, replay)
	b.DeleteAtCleanup(t, control.QueueName(pod))

	var snap sdk.Snapshot
	for seq := int64(1); seq <= 3; seq++ {
		snap, _ = snap.Apply("p", seq, true, []byte("m"))
	}
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []int64{3, 6, 7} { // 4 and 5 never reach the replay queue
		if err := ch.Publish("", replay, false, false, amqp.Publishing{
			Headers: amqp.Table{sdk.SeqHeader: seq, sdk.ProducerHeader: "p"}, Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}

	var app recorder
	tgt := start(t, sdk.Config{URL: b.URL, Queue: primary, Handler: app.handle, Restore: &snap,
		Identity: identity(t, t.TempDir(), "uid-b", pod)})
	sdktest.Eventually(t, 10*time.Second, "target on its control queue", func() bool {
		return b.Inspect(t, control.QueueName(pod)).Consumers == 1
	})
	reports := b.Name("reports")
	b.Queue(t, reports)
	b.SendControl(t, pod, control.NewStartReplay(replay, reports))
	if r := b.Report(t, reports); r.Type != control.ReplayStarted {
		t.Fatalf("first report %+v, want %s", r, control.ReplayStarted)
	}
	r := b.Report(t, reports)
	if r.Type != control.StreamGap || r.Pod != pod || r.ReplayQueue != replay || r.Gaps != 1 || r.Missing != 2 || r.Duplicates != 1 {
		t.Fatalf("report after the hole %+v, want %s from %s for %s: 1 gap, 2 missing, 1 duplicate", r, control.StreamGap, pod, replay)
	}
	if tgt.Mode() != sdk.Replaying {
		t.Errorf("mode %s: the gap report came after the replay ended", tgt.Mode())
	}
}

// A source told to RELEASE its queue applies what it was delivered, stops
// consuming for good and answers RELEASED: from then on the broker holds,
// ready and in order, exactly what the source did not apply, for the
// target. The source says at its fence that it understands RELEASE.
func TestReleasedSourceLetsGoOfItsQueue(t *testing.T) {
	b := broker(t)
	ex, key := b.Name("orders"), "orders"
	primary, podA := b.Name("orders"), b.Name("consumer-0")
	reports := b.Name("reports")
	b.Exchange(t, ex)
	b.Queue(t, primary)
	b.Queue(t, reports)
	b.Bind(t, primary, ex, key)
	b.DeleteAtCleanup(t, control.QueueName(podA))
	b.DeleteAtCleanup(t, reports)

	var appA recorder
	a := start(t, sdk.Config{URL: b.URL, Queue: primary, Handler: appA.handle, Prefetch: 20,
		Identity: identity(t, t.TempDir(), "uid-a", podA)})
	p := startProducer(t, b.URL, ex, key, "", 200)
	sdktest.Eventually(t, 10*time.Second, "source applying", func() bool { return a.Snapshot().LastSeq >= 30 })

	if err := publishAs(t, b.URL, primary, amqp.Publishing{UserId: b.User(), ReplyTo: reports,
		Headers: amqp.Table{sdk.FenceHeader: "mig-1"}}); err != nil {
		t.Fatal(err)
	}
	if r := b.Report(t, reports); r.Type != control.FencePassed || !r.Releases {
		t.Fatalf("fence report %+v, want %s saying the source understands RELEASE", r, control.FencePassed)
	}

	b.SendControl(t, podA, control.NewRelease(reports, "mig-1"))
	r := b.Report(t, reports)
	if r.Type != control.Released || r.Pod != podA || r.Fence != "mig-1" {
		t.Fatalf("answer %+v, want %s from %s for mig-1", r, control.Released, podA)
	}
	// Answered once nothing consumes the queue any more.
	if q := b.Inspect(t, primary); q.Consumers != 0 {
		t.Fatalf("primary queue has %d consumers after RELEASED, want none", q.Consumers)
	}
	last := a.Snapshot().LastSeq
	time.Sleep(300 * time.Millisecond) // 60 messages' worth of chances to take one more
	if got := a.Snapshot().LastSeq; got != last || a.Mode() != sdk.Released {
		t.Fatalf("released source at seq %d (was %d) in mode %s: it went on consuming", got, last, a.Mode())
	}

	n, _ := p.stop(t)
	expectRun(t, "released source", appA.applied(), 1, last)
	// What it did not apply waits for the target, none of it taken.
	sdktest.Eventually(t, 10*time.Second, "the rest ready in the queue", func() bool {
		return int64(b.Inspect(t, primary).Ready) == n-last
	})

	// A second RELEASE (a controller that restarted before it read the
	// answer) is answered again.
	b.SendControl(t, podA, control.NewRelease(reports, "mig-1"))
	if r := b.Report(t, reports); r.Type != control.Released || r.Fence != "mig-1" {
		t.Fatalf("second answer %+v, want %s", r, control.Released)
	}
}
