// Command consumer is ms2m's sample stateful consumer: it applies a queue's
// messages to in-memory state through the ms2m SDK, so it survives a live
// migration with nothing lost or applied twice, and shows its state on
// GET /state for tests to compare with the producer's reference.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

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
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("consumer failed", "err", err)
		os.Exit(1)
	}
}

type app struct {
	consumer *sdk.Consumer
	mem      *memState
	delay    time.Duration
	journal  *os.File
}

func (a *app) handle(ctx context.Context, m sdk.Message) error {
	if a.delay > 0 {
		t := time.NewTimer(a.delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	a.mem.apply(m.Seq, m.Body)
	if a.journal != nil {
		if _, err := fmt.Fprintf(a.journal, "%d\n", m.Seq); err != nil {
			return fmt.Errorf("journal: %w", err)
		}
	}
	return nil
}

// run serves until ctx ends; listening reports the HTTP address once bound.
func run(ctx context.Context, cfg config, log *slog.Logger, listening func(addr string)) error {
	a := &app{mem: newMemState(cfg.stateBytes), delay: cfg.delay}
	if cfg.journal != "" {
		f, err := os.OpenFile(cfg.journal, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		defer f.Close()
		a.journal = f
	}
	ids := sdk.PodInfoFiles(cfg.podInfoDir)
	ids.Hostname = cfg.hostnameFile
	c, err := sdk.NewConsumer(sdk.Config{URL: cfg.amqpURL, Queue: cfg.queue, DeclareQueue: cfg.declare,
		Prefetch: cfg.prefetch, Handler: a.handle, Identity: ids, Logger: log})
	if err != nil {
		return err
	}
	a.consumer = c

	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.httpPort))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if listening != nil {
		listening(ln.Addr().String())
	}
	st := c.Status()
	log.Info("consumer started", "queue", cfg.queue, "pod", st.Identity, "stateBytes", a.mem.bytes(), "http", ln.Addr().String())

	runErr := c.Run(ctx)
	// The consumer has let go of its queue; HTTP clients are still routed
	// here until the endpoints controller sees the pod terminating, so keep
	// answering them a little (a second signal ends it at once).
	if cfg.drain > 0 {
		log.Info("stopped consuming; serving HTTP while clients move away", "drain", cfg.drain)
		again, stopAgain := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		select {
		case <-again.Done():
		case <-time.After(cfg.drain):
		}
		stopAgain()
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return runErr
}
