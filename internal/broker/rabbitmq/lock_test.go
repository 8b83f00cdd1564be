package rabbitmq_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

// quiesce calls Quiesce until it is done (the management API learns of a
// consumer's channel late).
func quiesce(t *testing.T, h broker.Handoff, rec *v1alpha1.BrokerStatus, addrs []string) error {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		done, why, err := h.Quiesce(tctx(t), rec, addrs)
		var be *broker.Error
		if err != nil && !(errors.As(err, &be) && be.Retryable && time.Now().Before(deadline)) {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			t.Fatalf("not quiesced after 20 s: %s", why)
		}
	}
}

// Quiesce takes the queue from its consumer: the consumer's connection is
// closed, what it held unacked goes back in order, nobody else may consume
// until Unlock, and then the queue hands out everything from its head.
func TestQuiesceTakesTheQueueInOrder(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	srv.publish(t, s, "1", "2", "3", "4", "5")
	// the source: holds all five, applied and acked the first
	deliveries := consume(t, s, s.Queue, 10)
	holdAckingFirst(t, deliveries, 5)
	h := dial(t, s, "quiesce")
	var rec v1alpha1.BrokerStatus
	if err := quiesce(t, h, &rec, []string{"10.0.0.9", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if !rec.PrimaryLocked || rec.SourceDisconnected == "" {
		t.Fatalf("record %+v", rec)
	}
	// its connection is gone: the delivery channel ends
	for range deliveries {
	}
	// a reconnecting source is refused
	var refused error
	srv.on(t, s, func(ch *amqp.Channel) error {
		_, refused = ch.Consume(s.Queue, "", false, false, false, false, nil)
		return nil
	})
	var ae *amqp.Error
	if !errors.As(refused, &ae) || ae.Code != amqp.AccessRefused {
		t.Errorf("consuming the locked queue: %v; want ACCESS_REFUSED", refused)
	}
	if err := h.HoldLock(tctx(t), &rec); err != nil {
		t.Errorf("HoldLock with the lock held: %v", err)
	}
	if err := h.Unlock(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	if got := srv.receive(t, s, s.Queue, 4); strings.Join(got, ",") != "2,3,4,5" {
		t.Errorf("after the handoff the queue hands out %v, want 2,3,4,5", got)
	}
}

// Quiesce never disconnects a consumer that is not the source's, and
// refuses a quorum queue, which does not enforce an exclusive consumer.
func TestQuiesceRefusals(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	consume(t, s, s.Queue, 1)
	h := dial(t, s, "foreign")
	var rec v1alpha1.BrokerStatus
	err := quiesce(t, h, &rec, []string{"10.0.0.9"})
	if err == nil || !strings.Contains(err.Error(), "not the source's") || rec.SourceDisconnected != "" {
		t.Errorf("a consumer from another address: %v (disconnected %q)", err, rec.SourceDisconnected)
	}

	q := s
	q.Queue = s.Queue + "-quorum"
	srv.on(t, q, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q.Queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		return err
	})
	consume(t, q, q.Queue, 1)
	hq := dial(t, q, "quorum")
	err = quiesce(t, hq, &rec, nil)
	if err == nil || !strings.Contains(err.Error(), "quorum queue") {
		t.Errorf("a quorum queue: %v", err)
	}
}

// Disconnect frees what a frozen source holds without ending it: its
// consumer's connection is closed, the unacked deliveries go back in
// order, on a quorum queue too, and a consumer from elsewhere keeps its
// own. Without the source's address it touches nothing.
func TestDisconnectReturnsTheSourcesDeliveriesInOrder(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	vhost := srv.newVhost(t)
	for _, quorum := range []bool{false, true} {
		s := srv.stream(t, vhost, amqp.ExchangeDirect, "k")
		if quorum {
			s.Queue += "-quorum"
			srv.on(t, s, func(ch *amqp.Channel) error {
				if _, err := ch.QueueDeclare(s.Queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
					return err
				}
				return ch.QueueBind(s.Queue, "k", s.Exchange, false, nil)
			})
		}
		srv.publish(t, s, "1", "2", "3", "4")
		deliveries := consume(t, s, s.Queue, 10)
		holdAckingFirst(t, deliveries, 4)
		h := dial(t, s, "disconnect")
		var rec v1alpha1.BrokerStatus
		if _, _, err := h.Disconnect(tctx(t), &rec, nil); err == nil || rec.SourceDisconnected != "" {
			t.Fatalf("quorum=%v: without the source's address: %v (disconnected %q)", quorum, err, rec.SourceDisconnected)
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			done, why, err := h.Disconnect(tctx(t), &rec, []string{"10.0.0.9", "127.0.0.1"})
			var be *broker.Error
			if err != nil && !(errors.As(err, &be) && be.Retryable) {
				t.Fatalf("quorum=%v: %v", quorum, err)
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("quorum=%v: not disconnected after 20 s: %s", quorum, why)
			}
		}
		for range deliveries { // its connection is gone
		}
		if rec.PrimaryLocked {
			t.Errorf("quorum=%v: Disconnect locked the queue", quorum)
		}
		if got := srv.receive(t, s, s.Queue, 3); strings.Join(got, ",") != "2,3,4" {
			t.Errorf("quorum=%v: the queue hands out %v, want 2,3,4", quorum, got)
		}
	}
}

// holdAckingFirst takes n deliveries, as a consumer that applied and
// acked the first and holds the rest unacked.
func holdAckingFirst(t *testing.T, deliveries <-chan amqp.Delivery, n int) {
	t.Helper()
	for i := range n {
		d := <-deliveries
		if i == 0 {
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
		}
	}
}
