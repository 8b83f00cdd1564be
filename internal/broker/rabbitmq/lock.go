package rabbitmq

import (
	"context"
	"fmt"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

// lockTag is the consumer tag of the exclusive consumer that holds a
// primary queue during a Handoff.
const lockTag = "ms2m.handoff-lock"

// queueLock is an exclusive consumer on the primary queue. RabbitMQ
// refuses every other basic.consume on the queue while it exists (classic
// queues; quorum queues accept the flag and ignore it, hence the type
// check). It takes one message (prefetch 1) and never acks it: closing its
// channel puts it back at the head of the queue.
type queueLock struct {
	ch *amqp.Channel
}

func (l *queueLock) held() bool { return l != nil && !l.ch.IsClosed() }

// Quiesce implements broker.Handoff.
func (h *handoff) Quiesce(ctx context.Context, rec *v1alpha1.BrokerStatus, sourceAddrs []string) (bool, string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.stream.Queue
	if rec.PrimaryLocked && h.lock.held() {
		return true, "", nil
	}
	if rec.SourceDisconnected == "" {
		names, err := h.disconnectSource(ctx, sourceAddrs, true)
		if err != nil {
			return false, "", err
		}
		rec.SourceDisconnected = strings.Join(names, ", ")
	}
	locked, err := h.takeLock(ctx)
	if err != nil {
		return false, "", err
	}
	if !locked {
		return false, fmt.Sprintf("waiting for the broker to drop the consumer of the source's closed connection %s from queue %q", rec.SourceDisconnected, q), nil
	}
	rec.PrimaryLocked = true
	return true, "", nil
}

// Disconnect implements broker.Handoff.
func (h *handoff) Disconnect(ctx context.Context, rec *v1alpha1.BrokerStatus, sourceAddrs []string) (bool, string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.stream.Queue
	if len(sourceAddrs) == 0 {
		return false, "", unsupported("the source's address is not known: its consumer of queue %q cannot be told from others", q)
	}
	if rec.SourceDisconnected == "" {
		names, err := h.disconnectSource(ctx, sourceAddrs, false)
		if err != nil {
			return false, "", err
		}
		if len(names) == 0 {
			names = []string{"none"}
		}
		rec.SourceDisconnected = strings.Join(names, ", ")
	}
	c, ok := h.mgmt.queue(ctx, q)
	if !ok {
		return false, "", broker.Unreachable(fmt.Errorf("the management API does not answer (%v)", h.mgmt.unavailable()))
	}
	for _, cc := range c.consumers {
		if slices.Contains(sourceAddrs, cc.peer) {
			return false, fmt.Sprintf("waiting for the broker to drop the consumer of the source's closed connection %s from queue %q", rec.SourceDisconnected, q), nil
		}
	}
	return true, "", nil
}

// disconnectSource closes the connections of the primary queue's
// consumers from sourceAddrs. With exclusive (a queue about to be locked)
// every consumer must be the source's, and the queue classic.
func (h *handoff) disconnectSource(ctx context.Context, sourceAddrs []string, exclusive bool) ([]string, error) {
	q := h.stream.Queue
	st, err := h.queueStats(ctx, q)
	if err != nil {
		return nil, err
	}
	c, ok := h.mgmt.queue(ctx, q)
	switch {
	case !ok:
		return nil, unsupported("the management API does not answer (%v): the source's consumer of queue %q cannot be found and disconnected", h.mgmt.unavailable(), q)
	case exclusive && c.kind != "classic":
		return nil, unsupported("queue %q is a %s queue: only a classic queue enforces the exclusive consumer that keeps the thawed source off it", q, c.kind)
	case st.Consumers == 0:
		return nil, nil
	case len(c.consumers) < st.Consumers:
		return nil, broker.Unreachable(fmt.Errorf("the management API describes %d of the %d consumers of queue %q so far", len(c.consumers), st.Consumers, q))
	}
	var names []string
	for _, cc := range c.consumers {
		if len(sourceAddrs) > 0 && !slices.Contains(sourceAddrs, cc.peer) {
			if !exclusive {
				continue
			}
			return nil, unsupported("queue %q has a consumer that is not the source's (connection %q from %s; the source is at %s): the queue cannot be handed over while it consumes",
				q, cc.name, cc.peer, strings.Join(sourceAddrs, ", "))
		}
		if cc.name == "" || slices.Contains(names, cc.name) {
			continue
		}
		names = append(names, cc.name)
	}
	for _, n := range names {
		if err := h.mgmt.closeConnection(ctx, n, "ms2m: queue "+q+" is handed over to the migrated consumer"); err != nil {
			return nil, unsupported("%v", err)
		}
	}
	return names, nil
}

// takeLock tries to become the queue's exclusive consumer; false while
// another consumer is attached.
func (h *handoff) takeLock(ctx context.Context) (bool, error) {
	conn, err := h.sess.connect(ctx)
	if err != nil {
		return false, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return false, classify(err, "opening the lock's channel")
	}
	if err := ch.Qos(1, 0, false); err != nil {
		return false, classify(err, "setting the lock's prefetch")
	}
	if _, err := ch.Consume(h.stream.Queue, lockTag, false, true, false, false, nil); err != nil {
		if hasCode(err, amqp.AccessRefused) {
			return false, nil
		}
		return false, classify(err, fmt.Sprintf("taking queue %q exclusively", h.stream.Queue))
	}
	h.lock = &queueLock{ch: ch}
	return true, nil
}

// HoldLock implements broker.Handoff.
func (h *handoff) HoldLock(ctx context.Context, rec *v1alpha1.BrokerStatus) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !rec.PrimaryLocked || h.lock.held() {
		return nil
	}
	locked, err := h.takeLock(ctx)
	if err != nil || locked {
		return err
	}
	who := "another consumer"
	if c, ok := h.mgmt.queue(ctx, h.stream.Queue); ok && len(c.peers) > 0 {
		who = "consumers from " + strings.Join(c.peers, ", ")
	}
	return &broker.Error{Reason: v1alpha1.ReasonHandoffLockLost, Err: fmt.Errorf(
		"the exclusive consumer holding queue %q for the handoff was lost and %s took the queue meanwhile: messages the source took since are in its own state, and the handoff cannot go on",
		h.stream.Queue, who)}
}

// Unlock implements broker.Handoff.
func (h *handoff) Unlock(ctx context.Context, rec *v1alpha1.BrokerStatus) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unlock(rec)
}

func (h *handoff) unlock(rec *v1alpha1.BrokerStatus) error {
	if h.lock != nil {
		// closing the channel returns its unacked message to the queue
		err := h.lock.ch.Close()
		h.lock = nil
		if err != nil && h.sess.conn != nil && !h.sess.conn.IsClosed() {
			return broker.Unreachable(fmt.Errorf("releasing queue %q: %w", h.stream.Queue, err))
		}
	}
	// a lock of a session now gone went with its connection
	rec.PrimaryLocked = false
	return nil
}
