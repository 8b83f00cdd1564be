// Package rabbitmq hands a RabbitMQ (AMQP 0-9-1) stream over from a
// migrating consumer to its restored copy: a replay queue bound beside the
// workload's queue duplicates every message from before the checkpoint on,
// the target replays it on command over its control queue, and unbinding it
// seals the buffer at cutover.
//
// AMQP does the work; the management HTTP API, when reachable, adds what
// AMQP cannot tell: bindings, unacked counts and consumer addresses.
package rabbitmq

import (
	"context"
	"sync"

	"github.com/ms2m/ms2m/internal/broker"
)

// ReplayQueuePrefix prefixes every replay queue; the migration ID follows.
const ReplayQueuePrefix = "ms2m.replay."

// ReplayQueue is the replay queue of a migration. It is derived, not
// generated, so that a teardown after a crash finds what a Prepare whose
// record was never saved created.
func ReplayQueue(migrationID string) string { return ReplayQueuePrefix + migrationID }

var _ broker.Dialer = Dial

// Dial opens one migration's session: an AMQP connection of its own, named
// after the migration so that operators can tell it apart in the broker.
// Credentials in s.Username and s.Password replace those in s.URL.
func Dial(ctx context.Context, s broker.Stream, migrationID string) (broker.Handoff, error) {
	return dial(ctx, s, migrationID)
}

func dial(ctx context.Context, s broker.Stream, migrationID string) (broker.Handoff, error) {
	cfg, err := configure(s)
	if err != nil {
		return nil, err
	}
	h := &handoff{
		stream: s,
		id:     migrationID,
		sess:   session{cfg: cfg, name: "ms2m migration " + migrationID},
		mgmt:   newManagement(cfg),
	}
	if _, err := h.sess.connect(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// handoff serialises its calls: one reconciler drives a migration, and a
// single flow keeps the session's connection handling simple.
type handoff struct {
	stream broker.Stream
	id     string
	mu     sync.Mutex
	sess   session
	mgmt   *management
	// lock is the exclusive consumer a Handoff holds on the primary queue
	lock *queueLock
}

func (h *handoff) replayQueue() string { return ReplayQueue(h.id) }

// Degraded reports the management API being unreachable or refusing the
// credentials: bindings go unchecked, and unacked counts and consumer
// addresses unknown, until it answers again.
func (h *handoff) Degraded() error { return h.mgmt.unavailable() }

// Close closes the session's connection; calling it again does nothing.
func (h *handoff) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sess.close()
}
