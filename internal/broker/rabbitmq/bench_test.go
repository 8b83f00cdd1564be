package rabbitmq_test

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

// BenchmarkPrepareTeardown is the broker-side cost a migration adds
// outside the checkpoint: the replay queue made and removed.
func BenchmarkPrepareTeardown(b *testing.B) {
	srv := testServer(b)
	s := srv.stream(b, srv.newVhost(b), amqp.ExchangeDirect, "k")
	h := dial(b, s, "bench-cycle")
	for b.Loop() {
		var rec v1alpha1.BrokerStatus
		if err := h.Prepare(tctx(b), &rec); err != nil {
			b.Fatal(err)
		}
		if err := h.Teardown(tctx(b), &rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProgress is one poll of a replay in flight, with and without
// the management API.
func BenchmarkProgress(b *testing.B) {
	srv := testServer(b)
	s := srv.stream(b, srv.newVhost(b), amqp.ExchangeDirect, "k")
	noMgmt := s
	noMgmt.ManagementURL = "http://" + closedPort(b)
	for _, bc := range []struct {
		name   string
		stream broker.Stream
	}{{"management", s}, {"amqp-only", noMgmt}} {
		b.Run(bc.name, func(b *testing.B) {
			h := dial(b, bc.stream, "bench-progress-"+bc.name)
			var rec v1alpha1.BrokerStatus
			if err := h.Prepare(tctx(b), &rec); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { h.Teardown(tctx(b), &rec) })
			for b.Loop() {
				if _, err := h.Progress(tctx(b), &rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
