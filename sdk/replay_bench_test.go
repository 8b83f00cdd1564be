package sdk_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// BenchmarkReplay is a restored consumer working off a buffered replay
// queue on a real RabbitMQ, per message: START_REPLAY, then delivery,
// the de-duplication check, the digest and the ack, with a handler that
// does nothing. It is the ceiling under which a workload's own processing
// sets the replay rate; "half-applied" is the usual case of a replay queue
// bound before the checkpoint, whose first half the restored state holds.
func BenchmarkReplay(b *testing.B) {
	url := testenv.AMQPURL(b)
	for _, prefetch := range []int{1, 10, 100} {
		for _, applied := range []struct {
			name string
			frac int64 // the restored snapshot's LastSeq is N/frac (0: none)
		}{{"fresh", 0}, {"half-applied", 2}} {
			b.Run(fmt.Sprintf("prefetch=%d/%s", prefetch, applied.name), func(b *testing.B) {
				n := int64(b.N)
				var snap sdk.Snapshot
				if applied.frac > 0 {
					snap.LastSeq = n / applied.frac
				}
				replayBench(b, url, prefetch, n, snap)
			})
		}
	}
}

func replayBench(b *testing.B, url string, prefetch int, n int64, snap sdk.Snapshot) {
	br := sdktest.Dial(b, url, "")
	ex, key := br.Name("orders"), "orders"
	primary, replay, pod := br.Name("orders"), br.Name("orders.replay"), br.Name("consumer-0")
	br.Exchange(b, ex)
	br.Queue(b, primary) // the consumer's own queue, idle here
	br.Queue(b, replay)
	br.Bind(b, replay, ex, key)
	br.DeleteAtCleanup(b, control.QueueName(pod))
	fill(b, url, ex, key, n)

	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "name"), []byte(pod), 0o644); err != nil {
		b.Fatal(err)
	}
	c, err := sdk.NewConsumer(sdk.Config{URL: url, Queue: primary, Prefetch: prefetch, Restore: &snap,
		Handler:  func(context.Context, sdk.Message) error { return nil },
		Identity: sdk.IdentityFiles{Name: filepath.Join(dir, "name")}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	})
	sdktest.Eventually(b, 10*time.Second, "consumer on its control queue", func() bool {
		return c.Mode() == sdk.AwaitingReplay && br.Inspect(b, control.QueueName(pod)).Consumers == 1
	})

	b.ResetTimer()
	br.SendControl(b, pod, control.NewStartReplay(replay, ""))
	deadline := time.Now().Add(5 * time.Minute)
	for {
		k := c.Counters()
		if k.Replayed+k.Duplicates >= n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("replayed %d and skipped %d of %d messages in 5 minutes", k.Replayed, k.Duplicates, n)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	if k := c.Counters(); k.Replayed != n-snap.LastSeq || k.Gaps != 0 {
		b.Fatalf("counters %+v: want %d applied from the replay queue, no gap", k, n-snap.LastSeq)
	}
}

// fill publishes n sequenced messages through the exchange and waits for
// every confirm.
func fill(b *testing.B, url, exchange, key string, n int64) {
	b.Helper()
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: url, Exchange: exchange, RoutingKey: key, Window: 1024,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body := []byte(`{"order":1,"items":[{"sku":"A-1","qty":2}],"note":"a small order of a steady stream"}`)
	for range n {
		if _, err := pub.Publish(ctx, body); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}
