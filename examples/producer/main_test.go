package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// One command declares the topology and publishes; what reaches the queue
// is every sequence number once, in order, and its digest is the summary's.
func TestProducerPublishesWhatItReports(t *testing.T) {
	b := sdktest.Dial(t, testenv.AMQPURL(t), "")
	ex, q := b.Name("demo"), b.Name("demo-orders")
	b.Exchange(t, ex)
	b.DeleteAtCleanup(t, q)
	cfg := config{amqpURL: b.URL, exchange: ex, exchangeType: "direct", routingKey: "orders", queue: q,
		declare: true, count: 300, payloadSize: 64, firstSeq: 1, window: 32}

	var out bytes.Buffer
	if err := run(context.Background(), cfg, slog.New(slog.DiscardHandler), &out, nil); err != nil {
		t.Fatal(err)
	}
	var ref sdk.Digest
	for seq := int64(1); seq <= 300; seq++ {
		ref = ref.Next(seq, payload(seq, 64))
	}
	want := fmt.Sprintf("published=300 lastSeq=300 digest=%s returned=0", ref)
	if !strings.HasPrefix(out.String(), want) {
		t.Fatalf("summary %q, want it to start with %q", out.String(), want)
	}

	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var got sdk.Digest
	for want := int64(1); ; want++ {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if want != 301 {
				t.Fatalf("queue held %d messages, want 300", want-1)
			}
			break
		}
		seq, _, err := sdk.SeqOf(d.Headers)
		if err != nil || seq != want || d.DeliveryMode != amqp.Persistent {
			t.Fatalf("message %d: seq %d (%v), delivery mode %d", want, seq, err, d.DeliveryMode)
		}
		got = got.Next(seq, d.Body)
	}
	if got != ref {
		t.Fatal("the queue's messages do not hash to the reference")
	}
}

// Until signalled, /published follows the confirms, and the summary is
// written on the way out.
func TestProducerRunsUntilSignalled(t *testing.T) {
	b := sdktest.Dial(t, testenv.AMQPURL(t), "")
	ex, q := b.Name("demo"), b.Name("demo-events")
	b.Exchange(t, ex)
	b.DeleteAtCleanup(t, q)
	cfg := config{amqpURL: b.URL, exchange: ex, exchangeType: "direct", routingKey: "events", queue: q,
		declare: true, rate: 200, firstSeq: 1, window: 64}
	ctx, cancel := context.WithCancel(context.Background())
	addrc, done := make(chan string, 1), make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- run(ctx, cfg, slog.New(slog.DiscardHandler), &out, func(a string) { addrc <- a })
	}()
	url := "http://" + <-addrc + "/published"
	var st sdk.Published
	sdktest.Eventually(t, 10*time.Second, "/published counting", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st.Published >= 20
	})
	if st.LastSeq != st.Published {
		t.Fatalf("/published %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ready := b.Inspect(t, q).Ready
	if !strings.HasPrefix(out.String(), fmt.Sprintf("published=%d lastSeq=%d ", ready, ready)) {
		t.Fatalf("summary %q, queue holds %d", out.String(), ready)
	}
}
