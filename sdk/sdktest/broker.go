// Package sdktest helps tests of migration-aware workloads drive a real
// RabbitMQ the way the ms2m controller does: declare and bind queues, send
// control messages, read queue depths, and kill connections from the broker
// side. It never fakes the broker.
package sdktest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk/control"
)

// Broker is a test's administrative connection to a real RabbitMQ.
type Broker struct {
	URL, ManagementURL string
	conn               *amqp.Connection
	suffix             string
}

// Dial connects to url (management API at mgmtURL, may be empty when the
// test kills no connection) and closes the connection when the test ends.
func Dial(t testing.TB, url, mgmtURL string) *Broker {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Broker{URL: url, ManagementURL: mgmtURL, conn: conn, suffix: hex.EncodeToString(b)}
}

// Name is unique to this Broker value: tests sharing a broker never collide.
func (b *Broker) Name(base string) string { return base + "-" + b.suffix }

// do runs fn on a fresh channel: a channel error (404, 406) closes only it.
func (b *Broker) do(t testing.TB, what string, fn func(ch *amqp.Channel) error) {
	t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		t.Fatalf("%s: channel: %v", what, err)
	}
	defer func() { _ = ch.Close() }()
	if err := fn(ch); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Exchange declares a direct exchange, deleted when the test ends.
func (b *Broker) Exchange(t testing.TB, name string) {
	t.Helper()
	b.ExchangeOfKind(t, name, amqp.ExchangeDirect)
}

// ExchangeOfKind declares an exchange of the given type (direct, topic,
// fanout, headers), deleted when the test ends.
func (b *Broker) ExchangeOfKind(t testing.TB, name, kind string) {
	t.Helper()
	b.do(t, "declare exchange "+name, func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(name, kind, true, false, false, false, nil)
	})
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(name, false, false)
			_ = ch.Close()
		}
	})
}

// Queue declares a durable queue without arguments (as the SDK and the
// controller do), deleted when the test ends.
func (b *Broker) Queue(t testing.TB, name string) {
	t.Helper()
	b.do(t, "declare queue "+name, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, nil)
		return err
	})
	b.DeleteAtCleanup(t, name)
}

// QueueWithArgs declares a durable queue with arguments (x-queue-type:
// quorum, say), deleted when the test ends.
func (b *Broker) QueueWithArgs(t testing.TB, name string, args amqp.Table) {
	t.Helper()
	b.do(t, "declare queue "+name, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, args)
		return err
	})
	b.DeleteAtCleanup(t, name)
}

// DeleteAtCleanup deletes a queue someone else declares (a control queue).
func (b *Broker) DeleteAtCleanup(t testing.TB, queue string) {
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
			_ = ch.Close()
		}
	})
}

// Bind binds queue to exchange with key.
func (b *Broker) Bind(t testing.TB, queue, exchange, key string) {
	t.Helper()
	b.do(t, "bind "+queue, func(ch *amqp.Channel) error { return ch.QueueBind(queue, key, exchange, false, nil) })
}

// BindArgs binds queue to exchange with key and binding arguments (a
// headers exchange matches on them).
func (b *Broker) BindArgs(t testing.TB, queue, exchange, key string, args amqp.Table) {
	t.Helper()
	b.do(t, "bind "+queue, func(ch *amqp.Channel) error { return ch.QueueBind(queue, key, exchange, false, args) })
}

// BindExchange routes what reaches exchange src with key on to exchange
// dst (an exchange-to-exchange binding).
func (b *Broker) BindExchange(t testing.TB, dst, src, key string) {
	t.Helper()
	b.do(t, "bind exchange "+dst, func(ch *amqp.Channel) error { return ch.ExchangeBind(dst, key, src, false, nil) })
}

// Unbind removes that binding.
func (b *Broker) Unbind(t testing.TB, queue, exchange, key string) {
	t.Helper()
	b.do(t, "unbind "+queue, func(ch *amqp.Channel) error { return ch.QueueUnbind(queue, key, exchange, nil) })
}

// QueueState is a queue's ready messages and consumers, exact at the moment
// of asking (a passive declare; the management API lags by seconds).
type QueueState struct {
	Ready, Consumers int
	// Missing: the queue does not exist.
	Missing bool
}

// Inspect reads a queue's state.
func (b *Broker) Inspect(t testing.TB, queue string) QueueState {
	t.Helper()
	var q amqp.Queue
	var missing bool
	b.do(t, "inspect "+queue, func(ch *amqp.Channel) (err error) {
		q, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			missing, err = true, nil
		}
		return err
	})
	return QueueState{Ready: q.Messages, Consumers: q.Consumers, Missing: missing}
}

// User is the broker user the Broker connects as (its URL's; guest by
// default, as for any AMQP client).
func (b *Broker) User() string {
	uri, err := amqp.ParseURI(b.URL)
	if err != nil {
		return ""
	}
	return uri.Username
}

// SendControl publishes a control message to a pod's control queue the way
// the controller does (default exchange, persistent, its user-id).
func (b *Broker) SendControl(t testing.TB, pod string, m control.Message) {
	t.Helper()
	b.do(t, "send "+m.Type, func(ch *amqp.Channel) error {
		return ch.Publish("", control.QueueName(pod), false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: m.Encode(), UserId: b.User()})
	})
}

// Report takes the next consumer report from queue, waiting up to 10 s.
func (b *Broker) Report(t testing.TB, queue string) control.Report {
	t.Helper()
	var r control.Report
	Eventually(t, 10*time.Second, "a report on "+queue, func() bool {
		got := false
		b.do(t, "get "+queue, func(ch *amqp.Channel) error {
			d, ok, err := ch.Get(queue, true)
			if err != nil || !ok {
				return err
			}
			r, err = control.DecodeReport(d.Body)
			got = err == nil
			return err
		})
		return got
	})
	return r
}

// Eventually polls cond every 20 ms until it holds, failing the test after
// timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
