package rabbitmq

import (
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		name             string
		stream           broker.Stream
		user, pass, mgmt string
		vhost            string
	}{
		{"credentials from the URL", broker.Stream{URL: "amqp://alice:s3cret@mq.default.svc:5672/orders"},
			"alice", "s3cret", "http://alice:s3cret@mq.default.svc:15672", "orders"},
		{"Secret overrides the URL", broker.Stream{URL: "amqp://alice:old@mq:5672/", Username: "bob", Password: "new"},
			"bob", "new", "http://bob:new@mq:15672", "/"},
		{"Secret with a password only", broker.Stream{URL: "amqp://alice:old@mq/", Password: "new"},
			"alice", "new", "http://alice:new@mq:15672", "/"},
		{"no credentials: RabbitMQ's default", broker.Stream{URL: "amqp://mq"},
			"guest", "guest", "http://guest:guest@mq:15672", "/"},
		{"TLS", broker.Stream{URL: "amqps://u:p@mq.example.com/"},
			"u", "p", "https://u:p@mq.example.com:15671", "/"},
		{"IPv6", broker.Stream{URL: "amqp://u:p@[fd00::1]:5672/"},
			"u", "p", "http://u:p@[fd00::1]:15672", "/"},
		{"explicit management URL", broker.Stream{URL: "amqp://u:p@mq/", ManagementURL: "http://mq-admin:8080/"},
			"u", "p", "http://u:p@mq-admin:8080", "/"},
		{"management URL with its own user", broker.Stream{URL: "amqp://u:p@mq/", ManagementURL: "https://monitor:m@mq-admin"},
			"u", "p", "https://monitor:m@mq-admin", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := configure(tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.uri.Username != tc.user || cfg.uri.Password != tc.pass || cfg.uri.Vhost != tc.vhost {
				t.Errorf("AMQP user %q password %q vhost %q, want %q %q %q",
					cfg.uri.Username, cfg.uri.Password, cfg.uri.Vhost, tc.user, tc.pass, tc.vhost)
			}
			if got := cfg.mgmt.String(); got != tc.mgmt {
				t.Errorf("management URL %s, want %s", got, tc.mgmt)
			}
		})
	}
}

func TestConfigureRefusesBadURLsWithoutLeakingThem(t *testing.T) {
	for _, s := range []broker.Stream{
		{URL: "http://alice:s3cret@mq/"},
		{URL: "amqp://alice:s3cret@mq/", ManagementURL: "ftp://alice:s3cret@mq"},
	} {
		_, err := configure(s)
		if broker.ReasonOf(err) != v1alpha1.ReasonBrokerTopology {
			t.Errorf("%+v: got %v, want a %s error", s, err, v1alpha1.ReasonBrokerTopology)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reason    string
		retryable bool
	}{
		{amqp.ErrCredentials, v1alpha1.ReasonCredentials, false},
		{&amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - configure access to queue"}, v1alpha1.ReasonCredentials, false},
		{&amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no queue"}, v1alpha1.ReasonBrokerTopology, false},
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg"}, v1alpha1.ReasonBrokerTopology, false},
		{&amqp.Error{Code: amqp.NotAllowed, Reason: "NOT_ALLOWED - vhost not found"}, v1alpha1.ReasonBrokerTopology, false},
		{amqp.ErrClosed, v1alpha1.ReasonBrokerUnreachable, true},
		{&amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED - shutdown"}, v1alpha1.ReasonBrokerUnreachable, true},
		{broker.BadCredentials(amqp.ErrCredentials), v1alpha1.ReasonCredentials, false},
	} {
		err := classify(tc.err, "doing")
		if broker.ReasonOf(err) != tc.reason || broker.IsRetryable(err) != tc.retryable {
			t.Errorf("classify(%v) = %v (retryable %t), want %s (retryable %t)",
				tc.err, err, broker.IsRetryable(err), tc.reason, tc.retryable)
		}
	}
	if classify(nil, "doing") != nil {
		t.Error("classify(nil) is not nil")
	}
}

func TestCheckBinding(t *testing.T) {
	s := broker.Stream{Queue: "orders", Exchange: "shop", RoutingKey: "order.created"}
	for _, tc := range []struct {
		kind   string
		keys   []string
		reason string // "" for accepted
	}{
		{"direct", []string{"order.created"}, ""},
		{"direct", []string{"order.paid", "order.created"}, ""},
		{"topic", []string{"order.created"}, ""},
		{"direct", []string{"order.paid"}, v1alpha1.ReasonBrokerTopology},
		{"direct", nil, v1alpha1.ReasonBrokerTopology},
		{"fanout", []string{"anything"}, ""},
		{"fanout", nil, v1alpha1.ReasonBrokerTopology},
		{"headers", []string{""}, ""},
		{"x-consistent-hash", []string{"10"}, v1alpha1.ReasonUnsupported},
	} {
		err := checkBinding(s, tc.kind, tc.keys)
		if (err == nil) != (tc.reason == "") || (err != nil && broker.ReasonOf(err) != tc.reason) {
			t.Errorf("%s exchange binding with %q: got %v, want reason %q", tc.kind, tc.keys, err, tc.reason)
		}
	}
}

// Exchange types that hand each message to one of the bound queues (a
// consistent-hash exchange, say) cannot feed a replay queue a copy.
func TestCheckRoutes(t *testing.T) {
	b := func(ex string) v1alpha1.Binding { return v1alpha1.Binding{Exchange: ex, Queue: "q"} }
	for _, tc := range []struct {
		name  string
		bs    []v1alpha1.Binding
		kinds map[string]string
		want  string // "" for no error, else a word the error must say
	}{
		{"no binding", nil, nil, "default exchange"},
		{"direct and headers", []v1alpha1.Binding{b("a"), b("h")}, map[string]string{"a": "direct", "h": "headers"}, ""},
		{"consistent hash", []v1alpha1.Binding{b("a"), b("c")}, map[string]string{"a": "topic", "c": "x-consistent-hash"}, "x-consistent-hash"},
	} {
		err := checkRoutes("q", tc.bs, tc.kinds)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
