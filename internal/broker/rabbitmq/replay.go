package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

// replayBinding is the replay queue's twin of the workload's binding.
func (h *handoff) replayBinding() v1alpha1.Binding {
	return v1alpha1.Binding{Exchange: h.stream.Exchange, Queue: h.replayQueue(), RoutingKey: h.stream.RoutingKey}
}

// Prepare declares the replay queue and binds it wherever the workload's
// queue is bound (see routes.go), so every message published from now on
// lands in both. Without the management API only the binding the spec
// names can be known, and only it is copied (Degraded says so).
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
	twins := []v1alpha1.Binding{h.replayBinding()}
	if bs, kinds, ok := h.routes(ctx); ok {
		if err := checkStream(h.stream, bs, kinds); err != nil {
			return err
		}
		twins = twins[:0]
		for _, b := range bs {
			twins = append(twins, h.replayTwin(b))
		}
	}
	q := h.replayQueue()
	rec.ReplayQueue = q
	broker.NoteDeclaredQueue(rec, q)
	for _, b := range twins {
		broker.NoteAddedBinding(rec, b)
	}
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		// durable without arguments: a target may redeclare it that way
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return err
		}
		for _, b := range twins {
			args, err := bindingTable(b.Arguments)
			if err != nil {
				return err
			}
			if err := ch.QueueBind(q, b.RoutingKey, b.Exchange, false, args); err != nil {
				return err
			}
		}
		return nil
	})
	return classify(err, fmt.Sprintf("declaring replay queue %q and binding it as %q is bound (%s)", q, h.stream.Queue, describeRoutes(twins)))
}

// Seal unbinds the replay queue. The binding stays in rec.AddedBindings:
// teardown unbinds again, which is harmless.
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

// replayBindings is every binding that feeds the replay queue: the derived
// one, in case rec was lost, and whatever rec lists.
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

// unbind removes b; a missing queue or exchange means nothing flows
// through b any more, which is what was asked.
func (h *handoff) unbind(ctx context.Context, b v1alpha1.Binding) error {
	args, err := bindingTable(b.Arguments)
	if err != nil {
		return err
	}
	err = h.sess.do(ctx, func(ch *amqp.Channel) error {
		return ch.QueueUnbind(b.Queue, b.RoutingKey, b.Exchange, args)
	})
	if isNotFound(err) {
		return nil
	}
	return classify(err, fmt.Sprintf("unbinding queue %q from exchange %q (key %q)", b.Queue, b.Exchange, b.RoutingKey))
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
