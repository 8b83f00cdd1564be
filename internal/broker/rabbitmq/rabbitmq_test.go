package rabbitmq_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/broker/rabbitmq"
	"github.com/ms2m/ms2m/sdk/control"
)

// What the contract leaves to RabbitMQ: its management API, exchange
// types, control queues a pod declared itself, connection loss.

func tctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func dial(t testing.TB, s broker.Stream, id string) broker.Handoff {
	t.Helper()
	h, err := rabbitmq.Dial(tctx(t), s, id)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func wantReason(t *testing.T, err error, reason string, mention string) {
	t.Helper()
	if broker.ReasonOf(err) != reason || err == nil || !strings.Contains(err.Error(), mention) {
		t.Errorf("got %v, want a %s error mentioning %q", err, reason, mention)
	}
}

func TestWithoutManagementAPI(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	s.ManagementURL = "http://" + closedPort(t)
	h := dial(t, s, "no-mgmt")

	if _, err := h.Verify(tctx(t)); err != nil {
		t.Fatalf("Verify must not fail for want of the management API: %v", err)
	}
	if err := broker.DegradedBy(h); err == nil || !strings.Contains(err.Error(), "management API") {
		t.Errorf("Degraded() = %v, want the management API named as unavailable", err)
	}
	missing := s
	missing.Queue += ".missing"
	_, err := dial(t, missing, "no-mgmt-2").Verify(tctx(t))
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, missing.Queue)

	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	srv.publish(t, s, "a", "b", "c")
	p, err := h.Progress(tctx(t), &rec)
	if err != nil {
		t.Fatal(err)
	}
	if p.Buffer.Ready != 3 || p.Primary.Ready != 3 || p.Primary.ConsumerPeers != nil {
		t.Errorf("Progress without the management API: %+v; want 3 and 3 ready, peers unknown", p)
	}
	if err := h.Teardown(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}

	// the price of degrading: a binding that is gone goes unnoticed
	srv.unbind(t, s)
	if _, err := h.Verify(tctx(t)); err != nil {
		t.Errorf("Verify without the management API checked the binding after all: %v", err)
	}
}

func TestManagementCounts(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	h := dial(t, s, "counts")
	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	srv.publish(t, s, "1", "2", "3", "4")
	// the workload holds all four (prefetch 10) and acks one
	deliveries := consume(t, s, s.Queue, 10)
	holdAckingFirst(t, deliveries, 4)
	// the target takes two of the buffer, auto-acked
	srv.receive(t, s, rec.ReplayQueue, 2)

	want := broker.Progress{
		Buffer:  broker.QueueStats{Ready: 2, Acked: 2, ConsumerPeers: []string{}, PrefetchKnown: true, Type: "classic"},
		Primary: broker.QueueStats{Unacked: 3, Acked: 1, Consumers: 1, Prefetch: 10, PrefetchKnown: true, ConsumerPeers: []string{"127.0.0.1"}, Type: "classic"},
	}
	// the management API's statistics lag by collect_statistics_interval
	var p broker.Progress
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		var err error
		if p, err = h.Progress(tctx(t), &rec); err != nil {
			t.Fatal(err)
		}
		if reflect.DeepEqual(p, want) {
			break
		}
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Progress %+v\nwant     %+v", p, want)
	}
	if err := broker.DegradedBy(h); err != nil {
		t.Errorf("Degraded() = %v with the management API up", err)
	}
	if err := h.Teardown(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	withUserinfo := func(user, pass string) string {
		return strings.Replace(s.URL, "amqp://", "amqp://"+user+":"+pass+"@", 1)
	}

	fromURL := s
	fromURL.URL, fromURL.Username, fromURL.Password = withUserinfo(s.Username, s.Password), "", ""
	if _, err := dial(t, fromURL, "cred-url").Verify(tctx(t)); err != nil {
		t.Errorf("credentials in the URL: %v", err)
	}

	fromSecret := s
	fromSecret.URL = withUserinfo("stale", "stale")
	if _, err := dial(t, fromSecret, "cred-secret").Verify(tctx(t)); err != nil {
		t.Errorf("the Secret's credentials must win over the URL's: %v", err)
	}
}

func TestDefaultExchange(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	before := srv.snapshot(t, s)
	s.Exchange, s.RoutingKey = "", s.Queue
	h := dial(t, s, "default-exchange")
	_, err := h.Verify(tctx(t))
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, "default exchange")
	err = h.Prepare(tctx(t), &v1alpha1.BrokerStatus{})
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, "default exchange")
	if after := srv.snapshot(t, s); !slices.Equal(before, after) {
		t.Errorf("a refused Prepare changed the topology:\n%q\n%q", before, after)
	}
}

func TestExchangeTypes(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	vhost := srv.newVhost(t)

	headers := srv.stream(t, vhost, amqp.ExchangeHeaders, "")
	if _, err := dial(t, headers, "headers").Verify(tctx(t)); err != nil {
		t.Errorf("a headers exchange copies to every matching binding: %v", err)
	}

	fanout := srv.stream(t, vhost, amqp.ExchangeFanout, "")
	fanout.RoutingKey = "ignored.by.fanout"
	if _, err := dial(t, fanout, "fanout").Verify(tctx(t)); err != nil {
		t.Errorf("a fanout exchange routes whatever the key: %v", err)
	}
}

// Every route to the workload's queue reaches the replay queue: a second
// key on the named exchange, a headers exchange matching on arguments, and
// an exchange bound to the named one (exchange to exchange). Sealing stops
// all of them, teardown leaves the topology as it was.
func TestEveryRouteIsCopied(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "eu")
	headersEx, entry := s.Exchange+"-h", s.Exchange+"-entry"
	region := amqp.Table{"x-match": "all", "region": "us"}
	srv.on(t, s, func(ch *amqp.Channel) error {
		return errors.Join(
			ch.QueueBind(s.Queue, "us", s.Exchange, false, nil),
			ch.ExchangeDeclare(headersEx, amqp.ExchangeHeaders, true, false, false, false, nil),
			ch.QueueBind(s.Queue, "", headersEx, false, region),
			ch.ExchangeDeclare(entry, amqp.ExchangeFanout, true, false, false, false, nil),
			ch.ExchangeBind(s.Exchange, "", entry, false, nil))
	})
	before := srv.snapshot(t, s)
	h := dial(t, s, "routes")
	if _, err := h.Verify(tctx(t)); err != nil {
		t.Fatal(err)
	}
	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	publishAll := func() {
		srv.on(t, s, func(ch *amqp.Channel) error {
			pub := func(ex, key string, hdr amqp.Table) error {
				return ch.Publish(ex, key, true, false, amqp.Publishing{Headers: hdr, Body: []byte(ex + "/" + key)})
			}
			return errors.Join(pub(s.Exchange, "eu", nil), pub(s.Exchange, "us", nil),
				pub(headersEx, "", amqp.Table{"region": "us"}), pub(entry, "us", nil),
				// routed nowhere: neither queue may get it
				pub(headersEx, "", amqp.Table{"region": "asia"}))
		})
	}
	publishAll()
	waitFor(t, "four messages in each queue", func() bool {
		return srv.ready(t, s, s.Queue) == 4 && srv.ready(t, s, rec.ReplayQueue) == 4
	})
	// three routes tapped, and one binding into the replay queue: sealing
	// cuts every route at one instant
	var taps, into int
	for _, b := range rec.AddedBindings {
		switch {
		case b.ToExchange == rabbitmq.TapExchange("routes"):
			taps++
		case b.Queue == rec.ReplayQueue:
			into++
		}
	}
	if taps != 3 || into != 1 {
		t.Errorf("recorded %d taps and %d bindings into the replay queue, want 3 and 1: %+v", taps, into, rec.AddedBindings)
	}
	if err := h.Seal(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	publishAll()
	waitFor(t, "the primary queue fed", func() bool { return srv.ready(t, s, s.Queue) == 8 })
	time.Sleep(100 * time.Millisecond)
	if n := srv.ready(t, s, rec.ReplayQueue); n != 4 {
		t.Errorf("the sealed replay queue holds %d messages, want 4: a route still feeds it", n)
	}
	if err := h.Teardown(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	if after := srv.snapshot(t, s); !slices.Equal(before, after) {
		t.Errorf("teardown left the topology changed:\n%q\n%q", before, after)
	}
}

// A queue bound to no exchange is fed only through the default exchange
// (by its name), which cannot be copied: refused before anything changes.
func TestQueueWithoutBindingsIsRefused(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	srv.unbind(t, s)
	before := srv.snapshot(t, s)
	h := dial(t, s, "unbound")
	_, err := h.Verify(tctx(t))
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, "not bound")
	err = h.Prepare(tctx(t), &v1alpha1.BrokerStatus{})
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, "not bound")
	if after := srv.snapshot(t, s); !slices.Equal(before, after) {
		t.Errorf("a refused Prepare changed the topology:\n%q\n%q", before, after)
	}
}

// A pod that declared and consumes its control queue keeps it: the
// migration did not create it.
func TestControlQueueOfALivePod(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	pod := s.Queue + "-pod"
	q := control.QueueName(pod)
	srv.on(t, s, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q, true, false, false, false, nil)
		return err
	})
	stop := make(chan struct{})
	deliveries := consumeUntil(t, s, q, stop)
	before := srv.snapshot(t, s)

	h := dial(t, s, "live-pod")
	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	if err := h.StartReplay(tctx(t), control.QueueName(pod), &rec); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if m, err := control.Decode(d.Body); err != nil || m.Type != control.StartReplay {
			t.Errorf("the pod got %s (%v), want START_REPLAY", d.Body, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pod got no START_REPLAY")
	}
	if slices.Contains(rec.DeclaredQueues, q) {
		t.Errorf("the pod's own control queue was recorded as the migration's: %+v", rec)
	}

	err := h.DeleteControlQueue(tctx(t), control.QueueName(pod))
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, q)
	if !broker.IsRetryable(err) {
		t.Errorf("a control queue still consumed must be retried: %v", err)
	}
	if err := h.Teardown(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	if after := srv.snapshot(t, s); !slices.Equal(before, after) {
		t.Errorf("Teardown changed the topology:\n%q\n%q", before, after)
	}

	close(stop)
	waitFor(t, "the pod's consumer to go", func() bool { return h.DeleteControlQueue(tctx(t), control.QueueName(pod)) == nil })
}

// A control queue the migration made, which the target then consumes, is
// the target's: teardown leaves it and does not cancel the consumer.
func TestTeardownLeavesAConsumedControlQueue(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	pod := s.Queue + "-target"
	h := dial(t, s, "target-pod")
	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	if err := h.StartReplay(tctx(t), control.QueueName(pod), &rec); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	deliveries := consumeUntil(t, s, control.QueueName(pod), stop)
	<-deliveries
	if err := h.Teardown(tctx(t), &rec); err != nil {
		t.Fatalf("Teardown with the control queue in use: %v", err)
	}
	if lines := srv.snapshot(t, s); !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "queue "+control.QueueName(pod)+" ") }) {
		t.Errorf("Teardown deleted the target's control queue: %q", lines)
	}
	if err := h.EndReplay(tctx(t), control.QueueName(pod), &rec); err != nil {
		t.Fatal(err)
	}
	select {
	case d, ok := <-deliveries:
		if !ok {
			t.Fatal("the target's consumer was cancelled")
		}
		if m, _ := control.Decode(d.Body); m.Type != control.EndReplay {
			t.Errorf("got %s, want END_REPLAY", d.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target got no END_REPLAY")
	}
	close(stop)
	waitFor(t, "the target's consumer to go", func() bool { return h.DeleteControlQueue(tctx(t), control.QueueName(pod)) == nil })
}

func TestControlQueueDeclaredDifferently(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	pod := s.Queue + "-pod"
	srv.on(t, s, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(control.QueueName(pod), true, false, false, false, amqp.Table{"x-message-ttl": int32(1000)})
		return err
	})
	h := dial(t, s, "args")
	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
	err := h.StartReplay(tctx(t), control.QueueName(pod), &rec)
	wantReason(t, err, v1alpha1.ReasonBrokerTopology, control.QueueName(pod))
}

// A broker that drops the connection (a restart, an operator closing it)
// costs one redial, not the migration.
func TestRedialsALostConnection(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	h := dial(t, s, "redial")
	var rec v1alpha1.BrokerStatus
	if err := h.Prepare(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}

	var name string
	waitFor(t, "the management API to list the connection", func() bool {
		var conns []struct {
			Name   string `json:"name"`
			Client struct {
				Name string `json:"connection_name"`
			} `json:"client_properties"`
		}
		srv.get(t, &conns, "connections")
		for _, c := range conns {
			if c.Client.Name == "ms2m migration redial" {
				name = c.Name
			}
		}
		return name != ""
	})
	srv.api(t, http.MethodDelete, nil, "connections", name)
	time.Sleep(200 * time.Millisecond) // the close reaches the client

	srv.publish(t, s, "m")
	p, err := h.Progress(tctx(t), &rec)
	if err != nil || p.Buffer.Ready != 1 {
		t.Fatalf("Progress after the broker closed the connection: %+v, %v", p, err)
	}
	if err := h.Teardown(tctx(t), &rec); err != nil {
		t.Fatal(err)
	}
}

// consume holds deliveries from queue unacked on a connection that lives
// as long as the test.
func consume(t *testing.T, s broker.Stream, queue string, prefetch int) <-chan amqp.Delivery {
	ch := channel(t, s)
	if err := ch.Qos(prefetch, 0, false); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// consumeUntil consumes queue (auto-ack) until stop is closed, as a pod.
func consumeUntil(t *testing.T, s broker.Stream, queue string, stop <-chan struct{}) <-chan amqp.Delivery {
	ch := channel(t, s)
	d, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-stop
		ch.Close()
	}()
	return d
}

func channel(t *testing.T, s broker.Stream) *amqp.Channel {
	t.Helper()
	conn, err := amqp.DialConfig(s.URL, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: s.Username, Password: s.Password}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func TestClosedHandoffStaysClosed(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	s := srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "k")
	h := dial(t, s, "closed")
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := h.Verify(tctx(t)); err == nil {
		t.Error("Verify on a closed handoff reconnected")
	}
}
