package brokertest

import (
	"context"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

func runVerify(t *testing.T, env Env) {
	t.Run("Ok", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		env.Publish(t, s, bodies("before", 3)...)
		st, err := dial(t, env, s, migrationID(s, "v")).Verify(ctx(t))
		must(t, "Verify", err)
		if st.Ready != 3 {
			t.Errorf("Verify: Ready = %d, want the 3 published", st.Ready)
		}
	})

	// each broken stream must be refused as a topology error naming what
	// is wrong
	broken := []struct {
		name   string
		break_ func(t *testing.T, s broker.Stream) broker.Stream
		// mention returns what the message must name
		mention func(s broker.Stream) []string
	}{
		{"MissingQueue", func(_ *testing.T, s broker.Stream) broker.Stream { s.Queue += ".missing"; return s },
			func(s broker.Stream) []string { return []string{s.Queue} }},
		{"MissingExchange", func(_ *testing.T, s broker.Stream) broker.Stream { s.Exchange += ".missing"; return s },
			func(s broker.Stream) []string { return []string{s.Exchange} }},
		{"NotBound", func(t *testing.T, s broker.Stream) broker.Stream { env.Unbind(t, s); return s },
			func(s broker.Stream) []string { return []string{s.Queue, s.Exchange} }},
		{"WrongRoutingKey", func(_ *testing.T, s broker.Stream) broker.Stream { s.RoutingKey += ".other"; return s },
			func(s broker.Stream) []string { return []string{s.RoutingKey} }},
	}
	for _, tc := range broken {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.break_(t, env.NewStream(t))
			_, err := dial(t, env, s, migrationID(s, "v")).Verify(ctx(t))
			wantReason(t, err, v1alpha1.ReasonBrokerTopology, tc.mention(s)...)
		})
	}

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		s := env.Unreachable(t, env.NewStream(t))
		err := dialAndVerify(ctx(t), env, s)
		wantReason(t, err, v1alpha1.ReasonBrokerUnreachable)
		if !broker.IsRetryable(err) {
			t.Errorf("an unreachable broker must be retryable: %v", err)
		}
	})

	t.Run("BadPassword", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		s.Password = "not-" + s.Password
		err := dialAndVerify(ctx(t), env, s)
		wantReason(t, err, v1alpha1.ReasonCredentials)
		if broker.IsRetryable(err) {
			t.Errorf("refused credentials must not be retryable: %v", err)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		h := dial(t, env, s, migrationID(s, "v"))
		c, cancel := context.WithCancel(ctx(t))
		cancel()
		_, err := h.Verify(c)
		wantReason(t, err, v1alpha1.ReasonBrokerUnreachable)
		// the handoff is still usable with a live context
		_, err = h.Verify(ctx(t))
		must(t, "Verify after a cancelled call", err)
	})
}

// dialAndVerify is the first failure of Dial and Verify: an adapter may
// find out at either.
func dialAndVerify(c context.Context, env Env, s broker.Stream) error {
	h, err := env.Dial(c, s, migrationID(s, "v"))
	if err != nil {
		return err
	}
	defer h.Close()
	_, err = h.Verify(c)
	return err
}

func wantReason(t *testing.T, err error, reason string, mentions ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", reason)
	}
	t.Logf("as expected: %v", err)
	if got := broker.ReasonOf(err); got != reason {
		t.Errorf("reason %s, want %s (error: %v)", got, reason, err)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error does not name %q: %v", m, err)
		}
	}
}
