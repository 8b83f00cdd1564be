// Command producer publishes sequence-numbered messages (header
// x-ms2m-seq, persistent, publisher confirms) at a steady rate, and keeps
// the reference digest of what the broker confirmed: GET /published, and a
// summary line on exit.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, cfg, log, os.Stdout, nil); err != nil {
		log.Error("producer failed", "err", err)
		os.Exit(1)
	}
}

// run publishes until cfg.count messages are confirmed or ctx ends, then
// writes the summary line to out; listening reports the HTTP address.
func run(ctx context.Context, cfg config, log *slog.Logger, out io.Writer, listening func(addr string)) error {
	var setup func(ch *amqp.Channel) error
	if cfg.declare {
		setup = func(ch *amqp.Channel) error { return declare(ch, cfg) }
	}
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: cfg.amqpURL, Exchange: cfg.exchange,
		RoutingKey: cfg.routingKey, ProducerID: cfg.producerID, FirstSeq: cfg.firstSeq, Window: cfg.window, Setup: setup, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()

	if cfg.httpPort > 0 || listening != nil {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.httpPort))
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /published", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(pub.State())
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close() }()
		if listening != nil {
			listening(ln.Addr().String())
		}
	}

	start := time.Now()
	log.Info("publishing", "exchange", cfg.exchange, "routingKey", cfg.routingKey, "rate", cfg.rate, "count", cfg.count)
	pubErr := publish(ctx, pub, cfg)
	// Confirms still in flight belong to the reference: wait for them even
	// when signalled, but not forever.
	flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flushErr := pub.Flush(flushCtx)

	st := pub.State()
	elapsed := time.Since(start)
	fmt.Fprintf(out, "published=%d lastSeq=%d digest=%s returned=%d republished=%d reconnects=%d elapsed=%s rate=%.1f/s\n",
		st.Published, st.LastSeq, st.Digest, st.Returned, st.Republished, st.Reconnects,
		elapsed.Round(time.Millisecond), float64(st.Published)/elapsed.Seconds())
	if pubErr != nil && !errors.Is(pubErr, context.Canceled) {
		return pubErr
	}
	return flushErr
}

// publish paces messages on a fixed schedule (start + i/rate), so that a
// slow confirm does not lower the average rate.
func publish(ctx context.Context, pub *sdk.Publisher, cfg config) error {
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	start := time.Now()
	for i := int64(0); cfg.count == 0 || i < cfg.count; i++ {
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
		want := cfg.firstSeq + i
		seq, err := pub.Publish(ctx, payload(want, cfg.payloadSize))
		if err != nil {
			return err
		}
		if seq != want {
			return fmt.Errorf("published seq %d with the payload of %d", seq, want)
		}
	}
	return nil
}

// declare makes a demo's topology in one command: the exchange, the queue
// (durable, no arguments, as the consumer declares it) and their binding.
func declare(ch *amqp.Channel, cfg config) error {
	if err := ch.ExchangeDeclare(cfg.exchange, cfg.exchangeType, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", cfg.exchange, err)
	}
	if cfg.queue == "" {
		return nil
	}
	if _, err := ch.QueueDeclare(cfg.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", cfg.queue, err)
	}
	if err := ch.QueueBind(cfg.queue, cfg.routingKey, cfg.exchange, false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", cfg.queue, err)
	}
	return nil
}
