package rabbitmq_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/broker/brokertest"
	"github.com/ms2m/ms2m/internal/broker/rabbitmq"
	"github.com/ms2m/ms2m/internal/testenv"
)

// The fixture talks to RabbitMQ on its own (amqp091 and plain HTTP), never
// through the adapter, so that a bug in the adapter cannot hide in the
// measurement of it.

// server is the test broker.
type server struct {
	amqp *url.URL // with credentials, vhost path stripped
	mgmt string
	user string
	pass string
}

func testServer(t testing.TB) server {
	u, err := url.Parse(testenv.AMQPURL(t))
	if err != nil {
		t.Fatalf("MS2M_AMQP_URL: %v", err)
	}
	pass, _ := u.User.Password()
	u.Path = ""
	return server{amqp: u, mgmt: strings.TrimRight(testenv.RabbitMQManagementURL(t), "/"), user: u.User.Username(), pass: pass}
}

func env(t *testing.T) brokertest.Env {
	srv := testServer(t)
	return brokertest.Env{
		Dial: rabbitmq.Dial,
		NewStream: func(t *testing.T) broker.Stream {
			return srv.stream(t, srv.newVhost(t), amqp.ExchangeDirect, "order.created")
		},
		Shapes: map[string]func(*testing.T) broker.Stream{
			"fanout": func(t *testing.T) broker.Stream { return srv.stream(t, srv.newVhost(t), amqp.ExchangeFanout, "") },
			"topic": func(t *testing.T) broker.Stream {
				return srv.stream(t, srv.newVhost(t), amqp.ExchangeTopic, "order.*.created")
			},
			// the default vhost, shared with whatever else runs against
			// the broker: its name is "/", which the API wants as %2F
			"default-vhost": func(t *testing.T) broker.Stream { return srv.stream(t, "/", amqp.ExchangeDirect, "order.created") },
		},
		Unbind:      srv.unbind,
		Unreachable: unreachable,
		Publish:     srv.publish,
		Ready:       srv.ready,
		Send: func(t *testing.T, s broker.Stream, queue, body string) {
			srv.on(t, s, func(ch *amqp.Channel) error {
				return ch.Publish("", queue, true, false, amqp.Publishing{Body: []byte(body)})
			})
		},
		Receive:  srv.receive,
		Snapshot: srv.snapshot,
	}
}

func token() string { return fmt.Sprintf("%08x", rand.Uint32()) }

// newVhost gives a test a vhost of its own, so that its snapshots see
// nothing of the other tests.
func (srv server) newVhost(t testing.TB) string {
	v := "ms2m-test-" + token()
	srv.api(t, http.MethodPut, nil, "vhosts", v)
	srv.api(t, http.MethodPut, map[string]string{"configure": ".*", "write": ".*", "read": ".*"}, "permissions", v, srv.user)
	t.Cleanup(func() { srv.api(t, http.MethodDelete, nil, "vhosts", v) })
	return v
}

// stream declares an exchange of kind and a queue bound to it with key,
// as a workload and its producer would.
func (srv server) stream(t testing.TB, vhost, kind, key string) broker.Stream {
	tok := token()
	u := *srv.amqp
	u.User = nil // the credentials travel as from a Secret
	u.Path = "/" + url.PathEscape(vhost)
	if vhost == "/" {
		u.Path = "/"
	}
	s := broker.Stream{
		URL: u.String(), ManagementURL: srv.mgmt, Username: srv.user, Password: srv.pass,
		Queue: "orders-" + tok, Exchange: "orders-ex-" + tok, RoutingKey: key,
	}
	srv.on(t, s, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(s.Exchange, kind, true, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(s.Queue, true, false, false, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(s.Queue, key, s.Exchange, false, nil)
	})
	if vhost == "/" {
		t.Cleanup(func() {
			srv.on(t, s, func(ch *amqp.Channel) error {
				if _, err := ch.QueueDelete(s.Queue, false, false, false); err != nil {
					return err
				}
				return ch.ExchangeDelete(s.Exchange, false, false)
			})
		})
	}
	return s
}

// on runs fn on a connection of its own to s's vhost.
func (srv server) on(t testing.TB, s broker.Stream, fn func(*amqp.Channel) error) {
	t.Helper()
	u, _ := url.Parse(s.URL)
	u.User = url.UserPassword(s.Username, s.Password)
	conn, err := amqp.Dial(u.String())
	if err != nil {
		t.Fatalf("fixture: connecting to %s: %v", u.Redacted(), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("fixture: channel: %v", err)
	}
	if err := fn(ch); err != nil {
		t.Fatalf("fixture: %v", err)
	}
}

func (srv server) unbind(t *testing.T, s broker.Stream) {
	srv.on(t, s, func(ch *amqp.Channel) error { return ch.QueueUnbind(s.Queue, s.RoutingKey, s.Exchange, nil) })
}

// publish publishes as the producer: to the exchange, with a key the
// binding matches, a sequence header, persistent, confirmed.
func (srv server) publish(t *testing.T, s broker.Stream, bodies ...string) {
	key := strings.NewReplacer("*", "eu", "#", "eu").Replace(s.RoutingKey)
	srv.on(t, s, func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		for i, b := range bodies {
			dc, err := ch.PublishWithDeferredConfirm(s.Exchange, key, false, false, amqp.Publishing{
				Headers: amqp.Table{"x-ms2m-seq": int64(i)}, DeliveryMode: amqp.Persistent, Body: []byte(b),
			})
			if err != nil {
				return err
			}
			if !dc.Wait() {
				return fmt.Errorf("publish %q: nacked", b)
			}
		}
		return nil
	})
}

func (srv server) ready(t *testing.T, s broker.Stream, queue string) int64 {
	var n int
	srv.on(t, s, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		n = q.Messages
		return err
	})
	return int64(n)
}

func (srv server) receive(t *testing.T, s broker.Stream, queue string, n int) []string {
	var got []string
	srv.on(t, s, func(ch *amqp.Channel) error {
		for deadline := time.Now().Add(5 * time.Second); len(got) < n; {
			d, ok, err := ch.Get(queue, true)
			switch {
			case err != nil:
				return err
			case ok:
				got = append(got, string(d.Body))
			case time.Now().After(deadline):
				return fmt.Errorf("queue %s: %d of %d messages after 5 s: %q", queue, len(got), n, got)
			default:
				time.Sleep(20 * time.Millisecond)
			}
		}
		return nil
	})
	return got
}

// snapshot lists the queues, exchanges and bindings of s's vhost; in the
// shared default vhost only those naming s's queue or exchange.
func (srv server) snapshot(t *testing.T, s broker.Stream) []string {
	vhost := vhostOf(t, s)
	var queues []struct {
		Name       string         `json:"name"`
		Durable    bool           `json:"durable"`
		AutoDelete bool           `json:"auto_delete"`
		Arguments  map[string]any `json:"arguments"`
	}
	var exchanges []struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Durable bool   `json:"durable"`
	}
	var bindings []struct {
		Source, Destination string
		DestinationType     string         `json:"destination_type"`
		RoutingKey          string         `json:"routing_key"`
		Arguments           map[string]any `json:"arguments"`
	}
	srv.get(t, &queues, "queues", vhost)
	srv.get(t, &exchanges, "exchanges", vhost)
	srv.get(t, &bindings, "bindings", vhost)
	var lines []string
	for _, q := range queues {
		lines = append(lines, fmt.Sprintf("queue %s durable=%t auto_delete=%t args=%v", q.Name, q.Durable, q.AutoDelete, q.Arguments))
	}
	for _, e := range exchanges {
		lines = append(lines, fmt.Sprintf("exchange %q %s durable=%t", e.Name, e.Type, e.Durable))
	}
	for _, b := range bindings {
		lines = append(lines, fmt.Sprintf("binding %q -> %s %s key=%q args=%v", b.Source, b.DestinationType, b.Destination, b.RoutingKey, b.Arguments))
	}
	if vhost == "/" {
		lines = slices.DeleteFunc(lines, func(l string) bool { return !strings.Contains(l, s.Queue) && !strings.Contains(l, s.Exchange) })
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "queue "+s.Queue+" ") }) {
		t.Fatalf("snapshot of vhost %q misses the stream's own queue %s: %q", vhost, s.Queue, lines)
	}
	slices.Sort(lines)
	return lines
}

func vhostOf(t testing.TB, s broker.Stream) string {
	u, err := amqp.ParseURI(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Vhost
}

func (srv server) get(t testing.TB, out any, path ...string) {
	t.Helper()
	body := srv.api(t, http.MethodGet, nil, path...)
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("management API %v: %v", path, err)
	}
}

// api calls the management API; each path segment is escaped. RabbitMQ
// 3.10 now and then answers a listing with HTTP 500 while another test's
// vhost goes away; such answers are retried.
func (srv server) api(t testing.TB, method string, in any, path ...string) []byte {
	t.Helper()
	for i, p := range path {
		path[i] = url.PathEscape(p)
	}
	u := srv.mgmt + "/api/" + strings.Join(path, "/")
	for attempt := 1; ; attempt++ {
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(srv.user, srv.pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("management API %s %s: %v", method, u, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
			return out
		case resp.StatusCode/100 == 5 && attempt < 5:
			t.Logf("management API %s %s: HTTP %d %s; retrying", method, u, resp.StatusCode, out)
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("management API %s %s: HTTP %d %s", method, u, resp.StatusCode, out)
		}
	}
}

// unreachable points s at a port that was free a moment ago.
func unreachable(t *testing.T, s broker.Stream) broker.Stream {
	s.URL = "amqp://" + closedPort(t) + "/"
	s.ManagementURL = "http://" + closedPort(t)
	return s
}

func closedPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
