package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/sdk"
)

// The replay queue is fed through a tap: an internal fanout exchange of
// the migration's own, bound to every exchange that routes to the
// workload's queue with the same keys and arguments (exchange to
// exchange). The tap's one binding to the replay queue is made last and
// removed first, so the replay queue starts and stops receiving the stream
// at one instant, whatever the number of routes: unbinding route by route
// would let a message on one route miss the replay queue while a later one
// on another still reached it, a hole in the replayed stream.

// tapExchange is the migration's tap.
func (h *handoff) tapExchange() string { return TapExchange(h.id) }

// TapExchange is the exchange that feeds a migration's replay queue.
func TapExchange(migrationID string) string { return "ms2m.tap." + migrationID }

// replayBinding is the tap's binding to the replay queue: the one switch.
func (h *handoff) replayBinding() v1alpha1.Binding {
	return v1alpha1.Binding{Exchange: h.tapExchange(), Queue: h.replayQueue()}
}

// Prepare declares the replay queue and its tap, and taps every route to
// the workload's queue (see routes.go), so every message published from
// the tap's binding on lands in both. Without the management API only the
// binding the spec names can be known, and only it is copied (Degraded
// says so).
func (h *handoff) Prepare(ctx context.Context, rec *v1alpha1.BrokerStatus) error {
	if rec == nil {
		return errors.New("rabbitmq: Prepare needs a record")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// before any change: binding to a missing exchange would fail after
	// the queue was declared
	if err := h.checkExchange(ctx); err != nil {
		return err
	}
	routes := []v1alpha1.Binding{{Exchange: h.stream.Exchange, Queue: h.stream.Queue, RoutingKey: h.stream.RoutingKey}}
	if bs, kinds, ok := h.routes(ctx); ok {
		if err := checkStream(h.stream, bs, kinds); err != nil {
			return err
		}
		routes = bs
	}
	tap, q, sw := h.tapExchange(), h.replayQueue(), h.replayBinding()
	var taps []v1alpha1.Binding
	for _, b := range routes {
		b.Queue, b.ToExchange = "", tap
		taps = append(taps, b)
	}
	rec.ReplayQueue = q
	broker.NoteDeclaredExchange(rec, tap)
	broker.NoteDeclaredQueue(rec, q)
	for _, b := range append(taps, sw) {
		broker.NoteAddedBinding(rec, b)
	}
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		// internal: only bindings publish to it
		if err := ch.ExchangeDeclare(tap, amqp.ExchangeFanout, true, false, true, false, nil); err != nil {
			return err
		}
		for _, b := range taps {
			args, err := bindingTable(b.Arguments)
			if err != nil {
				return err
			}
			if err := ch.ExchangeBind(tap, b.RoutingKey, b.Exchange, false, args); err != nil {
				return err
			}
		}
		// durable without arguments: a target may redeclare it that way
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(q, "", tap, false, nil)
	})
	return classify(err, fmt.Sprintf("declaring replay queue %q and tapping every route to %q (%s)", q, h.stream.Queue, describeRoutes(routes)))
}

// DeclareBuffer declares the replay queue alone: no tap, no binding.
func (h *handoff) DeclareBuffer(ctx context.Context, rec *v1alpha1.BrokerStatus) error {
	if rec == nil {
		return errors.New("rabbitmq: DeclareBuffer needs a record")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.replayQueue()
	rec.ReplayQueue = q
	broker.NoteDeclaredQueue(rec, q)
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q, true, false, false, false, nil)
		return err
	})
	return classify(err, fmt.Sprintf("declaring replay queue %q", q))
}

// Seal cuts the replay queue off its tap, in one step. The binding stays
// in rec.AddedBindings: teardown unbinds again, which is harmless.
func (h *handoff) Seal(ctx context.Context, rec *v1alpha1.BrokerStatus) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.replayBindings(rec) {
		if err := h.unbind(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// replayBindings is every binding that feeds the replay queue directly:
// the tap's, derived in case rec was lost, and any rec lists.
func (h *handoff) replayBindings(rec *v1alpha1.BrokerStatus) []v1alpha1.Binding {
	bs := []v1alpha1.Binding{h.replayBinding()}
	if rec == nil {
		return bs
	}
	for _, b := range rec.AddedBindings {
		if b.Queue == h.replayQueue() && b != bs[0] {
			bs = append(bs, b)
		}
	}
	return bs
}

// destination names where b leads, for messages.
func destination(b v1alpha1.Binding) string {
	if b.ToExchange != "" {
		return fmt.Sprintf("exchange %q", b.ToExchange)
	}
	return fmt.Sprintf("queue %q", b.Queue)
}

// unbind removes b; a missing queue or exchange means nothing flows
// through b any more, which is what was asked.
func (h *handoff) unbind(ctx context.Context, b v1alpha1.Binding) error {
	args, err := bindingTable(b.Arguments)
	if err != nil {
		return err
	}
	err = h.sess.do(ctx, func(ch *amqp.Channel) error {
		if b.ToExchange != "" {
			return ch.ExchangeUnbind(b.ToExchange, b.RoutingKey, b.Exchange, false, args)
		}
		return ch.QueueUnbind(b.Queue, b.RoutingKey, b.Exchange, args)
	})
	if isNotFound(err) {
		return nil
	}
	return classify(err, fmt.Sprintf("unbinding %s from exchange %q (key %q)", destination(b), b.Exchange, b.RoutingKey))
}

// Progress reports the replay queue (zero before Prepare) and the
// workload's queue. A replay queue that vanished is an error: the
// messages it held are lost to the target.
func (h *handoff) Progress(ctx context.Context, rec *v1alpha1.BrokerStatus) (broker.Progress, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var p broker.Progress
	var err error
	if rec != nil && rec.ReplayQueue != "" {
		if p.Buffer, err = h.stats(ctx, rec.ReplayQueue); err != nil {
			return p, err
		}
	}
	p.Primary, err = h.stats(ctx, h.stream.Queue)
	return p, err
}

// Fence publishes n fence messages to the workload's queue through the
// default exchange, which routes by queue name alone: the replay queue
// does not get them. They are confirmed by the broker before rec counts
// them, so that rec never counts one that is not in the queue.
func (h *handoff) Fence(ctx context.Context, n int, rec *v1alpha1.BrokerStatus) error {
	if rec == nil {
		return errors.New("rabbitmq: Fence needs a record")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	reply, err := h.replyQueue(ctx, rec)
	if err != nil {
		return err
	}
	err = h.sess.doAlone(ctx, func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		var pending []*amqp.DeferredConfirmation
		for range n {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", h.stream.Queue, true, false, amqp.Publishing{
				Headers: amqp.Table{sdk.FenceHeader: h.id}, DeliveryMode: amqp.Persistent, Timestamp: time.Now(), ReplyTo: reply,
				UserId: h.sess.cfg.uri.Username})
			if err != nil {
				return err
			}
			pending = append(pending, dc)
		}
		for _, dc := range pending {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return errors.Join(err, errors.New("the broker refused a fence message"))
			}
		}
		return nil
	})
	if err != nil {
		return classify(err, fmt.Sprintf("putting %d fence message(s) into %q", n, h.stream.Queue))
	}
	rec.FencesSent += int32(n)
	return nil
}
