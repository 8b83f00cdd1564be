// Package brokertest is the contract every broker.Handoff adapter keeps,
// as a test suite the adapter's own test runs against a real broker:
//
//	func TestContract(t *testing.T) { brokertest.Run(t, env(t)) }
//
// The suite knows brokers only through Env, so each adapter supplies the
// few broker-specific moves (make a stream, publish, count, list the
// topology) and inherits every check.
package brokertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/broker"
)

// Env is an adapter under test and its broker.
type Env struct {
	// Dial is the adapter's Dialer.
	Dial broker.Dialer
	// NewStream makes a stream no other test uses: its queue bound to its
	// exchange with its routing key, routing by that key (a message
	// published with another key does not reach the queue), nothing
	// published yet, Username and Password set. It removes the stream when
	// the test ends.
	NewStream func(t *testing.T) broker.Stream
	// Shapes are more kinds of stream (a fanout exchange, say) that the
	// life-cycle checks run on too; they need not route by key.
	Shapes map[string]func(t *testing.T) broker.Stream
	// Unbind removes the binding between s.Queue and s.Exchange.
	Unbind func(t *testing.T, s broker.Stream)
	// Unreachable is s pointing where no broker listens.
	Unreachable func(t *testing.T, s broker.Stream) broker.Stream
	// Publish publishes bodies in order as the stream's producer does, and
	// returns once the broker holds them.
	Publish func(t *testing.T, s broker.Stream, bodies ...string)
	// Send puts body into queue alone, as a workload answering the
	// controller does.
	Send func(t *testing.T, s broker.Stream, queue, body string)
	// Ready counts the messages waiting in queue, without the adapter.
	Ready func(t *testing.T, s broker.Stream, queue string) int64
	// Receive takes n messages from queue, in order, failing t when they do
	// not come within a few seconds.
	Receive func(t *testing.T, s broker.Stream, queue string, n int) []string
	// Snapshot lists the broker's topology around s, one item a line
	// (RabbitMQ: the queues, exchanges and bindings of its vhost): equal
	// snapshots mean nothing was added, removed or changed. The suite names
	// migrations and pods after s.Queue, so on a shared broker a snapshot
	// may leave out what mentions neither s.Queue nor s.Exchange.
	Snapshot func(t *testing.T, s broker.Stream) []string
}

// Run runs the contract suite. Its tests run in parallel, each on a stream
// of its own.
func Run(t *testing.T, env Env) {
	if env.Dial == nil || env.NewStream == nil || env.Unreachable == nil || env.Unbind == nil || env.Publish == nil ||
		env.Ready == nil || env.Receive == nil || env.Snapshot == nil || env.Send == nil {
		t.Fatal("brokertest.Env is incomplete: every hook but Shapes is required")
	}
	t.Run("Verify", func(t *testing.T) { runVerify(t, env) })
	t.Run("Buffer", func(t *testing.T) { runBuffer(t, env) })
	t.Run("Control", func(t *testing.T) { runControl(t, env) })
	t.Run("Teardown", func(t *testing.T) { runTeardown(t, env) })
	for name, mk := range env.Shapes {
		t.Run("Shape/"+name, func(t *testing.T) {
			t.Parallel()
			lifecycle(t, env, mk(t))
		})
	}
}

// timeout bounds every adapter call of a test: an adapter that hangs
// fails instead of stalling the suite.
const timeout = 30 * time.Second

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return c
}

// migrationID names a migration after s, and tag keeps two of one test
// apart.
func migrationID(s broker.Stream, tag string) string {
	return fmt.Sprintf("%s.%s.%04x", s.Queue, tag, rand.IntN(1<<16))
}

func podName(s broker.Stream, tag string) string { return s.Queue + "-" + tag }

// dial opens a handoff and closes it when the test ends.
func dial(t *testing.T, env Env, s broker.Stream, id string) broker.Handoff {
	t.Helper()
	h, err := env.Dial(ctx(t), s, id)
	if err != nil {
		t.Fatalf("Dial(%s): %v", id, err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close(%s): %v", id, err)
		}
	})
	return h
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
