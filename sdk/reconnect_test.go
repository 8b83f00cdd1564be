package sdk_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// The broker closes the consumer's connection, then the producer's, while
// messages flow (with ten prefetched deliveries in the air): both come
// back, and the consumer still applies every confirmed message once, in
// order.
func TestReconnectLosesAndDuplicatesNothing(t *testing.T) {
	b := broker(t)
	ex, key, q := b.Name("events"), "events", b.Name("events")
	pod := b.Name("consumer")
	consumerConn, producerConn := b.Name("sdk-consumer"), b.Name("sdk-producer")
	b.Exchange(t, ex)
	b.Queue(t, q)
	b.Bind(t, q, ex, key)
	b.DeleteAtCleanup(t, control.QueueName(pod))

	var app recorder
	c := start(t, sdk.Config{URL: b.URL, Queue: q, Handler: app.handle, Prefetch: 10,
		ConnectionName: consumerConn, Identity: identity(t, t.TempDir(), "uid-1", pod)})
	p := startProducer(t, b.URL, ex, key, producerConn, 100)
	sdktest.Eventually(t, 10*time.Second, "consumer applying", func() bool { return c.Snapshot().LastSeq >= 30 })

	b.KillConnection(t, consumerConn)
	sdktest.Eventually(t, 10*time.Second, "consumer reconnected", func() bool {
		return c.Counters().Reconnects == 1 && c.Status().Connected
	})
	at := c.Snapshot().LastSeq
	sdktest.Eventually(t, 10*time.Second, "consumer applying again", func() bool { return c.Snapshot().LastSeq >= at+20 })

	b.KillConnection(t, producerConn)
	sdktest.Eventually(t, 10*time.Second, "producer reconnected", func() bool {
		st := p.pub.State()
		return st.Reconnects == 1 && st.LastSeq > at+40
	})

	n, ref := p.stop(t)
	sdktest.Eventually(t, 10*time.Second, "consumer caught up", func() bool { return c.Snapshot().LastSeq >= n })
	time.Sleep(200 * time.Millisecond)
	expectRun(t, "consumer", app.applied(), 1, n)
	expectExactlyOnce(t, "consumer", c.Consumer, n, ref)
	if c.Mode() != sdk.Primary {
		t.Errorf("a reconnect changed the mode to %s", c.Mode())
	}
	t.Logf("producer %+v", p.pub.State())
}

// A handler error hands back the message and everything prefetched behind
// it: nothing overtakes it, and the sequence does not advance past it, on a
// classic queue and on a quorum queue (which puts a message nacked with
// requeue behind the ones that followed it).
func TestHandlerErrorKeepsOrder(t *testing.T) {
	for _, quorum := range []bool{false, true} {
		t.Run(map[bool]string{false: "classic", true: "quorum"}[quorum], func(t *testing.T) {
			t.Parallel()
			b := broker(t)
			q, pod := b.Name("work"), b.Name("worker")
			if quorum {
				b.QueueWithArgs(t, q, amqp.Table{"x-queue-type": "quorum"})
			} else {
				b.Queue(t, q)
			}
			b.DeleteAtCleanup(t, control.QueueName(pod))

			pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: b.URL, RoutingKey: q})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = pub.Close() }()
			const n = 40
			for i := range n {
				if _, err := pub.Publish(t.Context(), []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := pub.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}

			app := recorder{fails: map[int64]int{5: 1, 17: 2, 40: 1}}
			c := start(t, sdk.Config{URL: b.URL, Queue: q, Handler: app.handle, Prefetch: 10,
				RetryMin: 20 * time.Millisecond, Identity: identity(t, t.TempDir(), "uid-1", pod)})
			sdktest.Eventually(t, 10*time.Second, "all applied", func() bool { return c.Snapshot().LastSeq >= n })
			time.Sleep(100 * time.Millisecond)
			expectRun(t, "consumer", app.applied(), 1, n)
			expectExactlyOnce(t, "consumer", c.Consumer, n, pub.State().Digest)
			if k := c.Counters(); k.HandlerErrors != 4 {
				t.Errorf("%d handler errors counted, want 4", k.HandlerErrors)
			}
		})
	}
}

// A primary queue that does not exist yet fails every session after the
// dial: the consumer must back off rather than spin, and start consuming
// once the queue appears.
func TestMissingQueueBacksOff(t *testing.T) {
	b := broker(t)
	q, pod := b.Name("later"), b.Name("early-consumer")
	b.DeleteAtCleanup(t, control.QueueName(pod))
	var app recorder
	c := start(t, sdk.Config{URL: b.URL, Queue: q, Handler: app.handle, ReconnectMax: 400 * time.Millisecond,
		Identity: identity(t, t.TempDir(), "uid-1", pod)})
	time.Sleep(1500 * time.Millisecond)
	// 100, 200, 400, 400... ms apart (with jitter down to half): at most ~8.
	if k := c.Counters(); k.Reconnects > 8 {
		t.Fatalf("%d sessions in 1.5 s against a missing queue", k.Reconnects+1)
	}
	b.Queue(t, q)
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: b.URL, RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	for range 3 {
		if _, err := pub.Publish(t.Context(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	sdktest.Eventually(t, 5*time.Second, "consuming once the queue exists", func() bool { return c.Snapshot().LastSeq == 3 })
}
