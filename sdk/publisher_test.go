package sdk_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// The broker closes a publisher's connection while a full window of
// messages awaits confirmation: they are published again, and a consumer
// still ends with every confirmed message once, in order.
func TestPublisherRepublishesUnconfirmed(t *testing.T) {
	b := broker(t)
	q, pod, conn := b.Name("burst"), b.Name("burst-consumer"), b.Name("burst-publisher")
	b.Queue(t, q)
	b.DeleteAtCleanup(t, control.QueueName(pod))
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: b.URL, RoutingKey: q, ConnectionName: conn,
		Window: 256, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pub.Publish(ctx, []byte("first")); err != nil {
		t.Fatal(err)
	}
	b.WaitConnection(t, conn)

	const n = 6000
	errc := make(chan error, 1)
	go func() {
		for i := 2; i <= n; i++ {
			if _, err := pub.Publish(ctx, []byte(fmt.Sprintf("burst message %d", i))); err != nil {
				errc <- err
				return
			}
		}
		errc <- pub.Flush(ctx)
	}()
	sdktest.Eventually(t, 10*time.Second, "burst under way", func() bool { return pub.State().LastSeq >= 1500 })
	b.KillConnection(t, conn)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	st := pub.State()
	t.Logf("publisher %+v", st)
	if st.Reconnects != 1 || st.Republished == 0 || st.Published != n {
		t.Fatalf("publisher %+v: want one reconnect, some messages published again, %d confirmed", st, n)
	}

	var app recorder
	c := start(t, sdk.Config{URL: b.URL, Queue: q, Handler: app.handle, Prefetch: 100,
		Identity: identity(t, t.TempDir(), "uid-1", pod)})
	sdktest.Eventually(t, 30*time.Second, "all applied", func() bool { return b.Inspect(t, q).Ready == 0 && c.Snapshot().LastSeq >= n })
	time.Sleep(100 * time.Millisecond)
	expectRun(t, "consumer", app.applied(), 1, n)
	expectExactlyOnce(t, "consumer", c.Consumer, n, st.Digest)
}
