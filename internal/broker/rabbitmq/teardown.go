package rabbitmq

import (
	"context"
	"fmt"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/sdk/control"
)

// Teardown puts the broker back as it was before Prepare: removed bindings
// restored, added ones removed, declared queues and exchanges deleted, and
// the replay queue, reply queue and tap derived from the migration ID
// deleted even when rec does not list them (a crash before the record was
// saved). Deleting the tap removes its bindings with it. Removed bindings come back
// first, so that the workload's queue is fed again before anything else
// changes.
func (h *handoff) Teardown(ctx context.Context, rec *v1alpha1.BrokerStatus) error {
	if rec == nil {
		rec = &v1alpha1.BrokerStatus{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.unlock(rec); err != nil {
		return err
	}
	for _, b := range rec.RemovedBindings {
		if err := h.rebind(ctx, b); err != nil {
			return err
		}
	}
	for _, b := range append(slices.Clone(rec.AddedBindings), h.replayBinding()) {
		if err := h.unbind(ctx, b); err != nil {
			return err
		}
	}
	queues := slices.Clone(rec.DeclaredQueues)
	for _, q := range []string{h.replayQueue(), control.ReplyQueuePrefix + h.id} {
		if !slices.Contains(queues, q) {
			queues = append(queues, q)
		}
	}
	for _, q := range queues {
		// a control queue the target consumes is the target's from now
		// on; DeleteControlQueue removes it with the pod
		if _, err := h.deleteQueue(ctx, q, strings.HasPrefix(q, control.QueuePrefix)); err != nil {
			return err
		}
	}
	exchanges := slices.Clone(rec.DeclaredExchanges)
	if !slices.Contains(exchanges, h.tapExchange()) {
		exchanges = append(exchanges, h.tapExchange())
	}
	for _, ex := range exchanges {
		err := h.sess.do(ctx, func(ch *amqp.Channel) error { return ch.ExchangeDelete(ex, false, false) })
		if err != nil && !isNotFound(err) {
			return classify(err, fmt.Sprintf("deleting exchange %q", ex))
		}
	}
	broker.TornDown(rec)
	return nil
}

// rebind restores a binding the migration removed; unlike deleting, a
// missing queue or exchange is a failure here, as the workload would no
// longer receive what it did.
func (h *handoff) rebind(ctx context.Context, b v1alpha1.Binding) error {
	args, err := bindingTable(b.Arguments)
	if err != nil {
		return err
	}
	err = h.sess.do(ctx, func(ch *amqp.Channel) error {
		if b.ToExchange != "" {
			return ch.ExchangeBind(b.ToExchange, b.RoutingKey, b.Exchange, false, args)
		}
		return ch.QueueBind(b.Queue, b.RoutingKey, b.Exchange, false, args)
	})
	if isNotFound(err) {
		return broker.InvalidTopology("cannot restore the binding of queue %q to exchange %q (key %q): one of them no longer exists; "+
			"recreate it and the binding by hand", b.Queue, b.Exchange, b.RoutingKey)
	}
	return classify(err, fmt.Sprintf("restoring the binding of queue %q to exchange %q (key %q)", b.Queue, b.Exchange, b.RoutingKey))
}
