package rabbitmq

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The management client's failure policy, against HTTP servers that fail
// on demand (the real broker is exercised by the contract suite).
func TestManagementFailures(t *testing.T) {
	var calls atomic.Int32
	status := func(codes ...int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n := int(calls.Add(1)) - 1
			if u, p, _ := r.BasicAuth(); u != "alice" || p != "pw" {
				t.Errorf("basic auth %q %q, want the AMQP credentials", u, p)
			}
			if r.URL.EscapedPath() != "/api/queues/%2F/q" {
				t.Errorf("path %s, want the vhost escaped", r.URL.EscapedPath())
			}
			w.WriteHeader(codes[min(n, len(codes)-1)])
			w.Write([]byte(`{"messages_unacknowledged": 2}`))
		}
	}
	for _, tc := range []struct {
		name     string
		handler  http.HandlerFunc
		ok       bool
		calls    int32
		degraded bool
	}{
		{"a 500 is retried once", status(500, 200), true, 2, false},
		{"two 500s degrade", status(500, 500), false, 2, true},
		{"refused credentials degrade", status(401), false, 1, true},
		{"a missing queue is no failure", status(404), false, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls.Store(0)
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			m := testManagement(t, srv.URL)
			c, ok := m.queue(context.Background(), "q")
			if ok != tc.ok || (ok && c.unacked != 2) || calls.Load() != tc.calls || (m.unavailable() != nil) != tc.degraded {
				t.Errorf("ok %t unacked %d after %d calls, degraded: %v; want ok %t after %d calls, degraded %t",
					ok, c.unacked, calls.Load(), m.unavailable(), tc.ok, tc.calls, tc.degraded)
			}
			// an API that answers is asked again at once
			if _, _ = m.queue(context.Background(), "q"); tc.degraded && calls.Load() == tc.calls {
				t.Error("an API that answered with an error was not asked again")
			}
		})
	}

	t.Run("an unreachable API is left alone for a while", func(t *testing.T) {
		srv := httptest.NewServer(status(200))
		srv.Close()
		m := testManagement(t, srv.URL)
		if _, ok := m.queue(context.Background(), "q"); ok || m.unavailable() == nil {
			t.Fatal("an unreachable API did not degrade")
		}
		if time.Until(m.retryAt) < managementRetry/2 {
			t.Errorf("no back-off after an unreachable API: retry at %v", m.retryAt)
		}
	})
}

func testManagement(t *testing.T, raw string) *management {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("alice", "pw")
	return newManagement(config{mgmt: u, uri: amqp.URI{Vhost: "/"}})
}
