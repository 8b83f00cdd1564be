package rabbitmq

import (
	"context"
	"fmt"
	"slices"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"

	"github.com/ms2m/ms2m/internal/broker"
)

// Verify checks the queue and the exchange exist and that the queue is bound
// to the exchange with the routing key. The binding check needs the
// management API and is skipped (see Degraded) without it.
func (h *handoff) Verify(ctx context.Context) (broker.QueueStats, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stream
	if _, err := h.queueStats(ctx, s.Queue); err != nil {
		return broker.QueueStats{}, err
	}
	if err := h.checkExchange(ctx); err != nil {
		return broker.QueueStats{}, err
	}
	if bs, kinds, ok := h.routes(ctx); ok {
		if err := checkStream(s, bs, kinds); err != nil {
			return broker.QueueStats{}, err
		}
	}
	// measured last, so that the stats are as fresh as the checks allow
	return h.stats(ctx, s.Queue)
}

func (h *handoff) checkExchange(ctx context.Context) error {
	s := h.stream
	if s.Exchange == "" {
		return broker.InvalidTopology("no exchange given for queue %q: the default exchange cannot feed a replay queue; "+
			"publish to a named exchange bound to %q and set messageQueueConfig.exchangeName", s.Queue, s.Queue)
	}
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		// a passive declare checks existence only; the kind is ignored
		return ch.ExchangeDeclarePassive(s.Exchange, amqp.ExchangeDirect, false, false, false, false, nil)
	})
	if isNotFound(err) {
		return broker.InvalidTopology("exchange %q does not exist in vhost %q: create it (or start the producer that declares it), "+
			"or set messageQueueConfig.exchangeName to the exchange the producer publishes to", s.Exchange, h.sess.cfg.uri.Vhost)
	}
	return classify(err, fmt.Sprintf("checking exchange %q", s.Exchange))
}

// checkStream checks the queue is bound as the spec says, and that every
// route to it can be copied.
func checkStream(s broker.Stream, bs []v1alpha1.Binding, kinds map[string]string) error {
	var keys []string
	for _, b := range bs {
		if b.Exchange == s.Exchange {
			keys = append(keys, b.RoutingKey)
		}
	}
	if err := checkBinding(s, kinds[s.Exchange], keys); err != nil {
		return err
	}
	return checkRoutes(s.Queue, bs, kinds)
}

// checkBinding checks the exchange the spec names routes to s.Queue by
// s.RoutingKey, given the exchange's kind and the keys it binds the queue
// with: the spec describes the stream as it is (every route to the queue
// is copied, whichever the spec names).
func checkBinding(s broker.Stream, kind string, keys []string) error {
	if !slices.Contains(copyable, kind) && len(keys) > 0 {
		return unsupported("exchange %q is of type %q: a replay queue can only duplicate what direct, topic, fanout and headers exchanges route", s.Exchange, kind)
	}
	if len(keys) > 0 && (kind == amqp.ExchangeFanout || kind == amqp.ExchangeHeaders || slices.Contains(keys, s.RoutingKey)) {
		return nil
	}
	if len(keys) == 0 {
		return broker.InvalidTopology("queue %q is not bound to exchange %q: bind it with routing key %q "+
			"(rabbitmqadmin declare binding source=%s destination=%s routing_key=%s), or fix messageQueueConfig",
			s.Queue, s.Exchange, s.RoutingKey, s.Exchange, s.Queue, s.RoutingKey)
	}
	return broker.InvalidTopology("queue %q is bound to exchange %q with routing key(s) %q, not %q: "+
		"set messageQueueConfig.routingKey to the key the producer publishes with", s.Queue, s.Exchange, keys, s.RoutingKey)
}

// stats is a queue's state: Ready and Consumers exact from AMQP; Unacked,
// Acked and ConsumerPeers from the management API when it answers (lagging
// by its collect_statistics_interval, 5 s by default).
func (h *handoff) stats(ctx context.Context, queue string) (broker.QueueStats, error) {
	st, err := h.queueStats(ctx, queue)
	if err != nil {
		return st, err
	}
	if c, ok := h.mgmt.queue(ctx, queue); ok {
		st.Unacked, st.Acked, st.Prefetch, st.Type = c.unacked, c.acked, c.prefetch, c.kind
		// the API learns of new consumers late, and of their channels'
		// addresses later still: what it says counts only once it
		// describes every one (a consumer listed without its address made
		// a consuming source look like it consumed nothing)
		st.PrefetchKnown = c.described >= st.Consumers
		if c.located >= st.Consumers {
			st.ConsumerPeers = c.peers
		}
	}
	return st, nil
}

func (h *handoff) queueStats(ctx context.Context, queue string) (broker.QueueStats, error) {
	var q amqp.Queue
	err := h.sess.do(ctx, func(ch *amqp.Channel) (err error) {
		q, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		return err
	})
	switch {
	case isNotFound(err):
		return broker.QueueStats{}, broker.InvalidTopology("queue %q does not exist in vhost %q: start the consumer that declares it, "+
			"or set messageQueueConfig.queueName to the queue it consumes", queue, h.sess.cfg.uri.Vhost)
	case hasCode(err, amqp.ResourceLocked):
		return broker.QueueStats{}, unsupported("queue %q is exclusive to its consumer's connection: a migrated consumer could not reattach to it", queue)
	case err != nil:
		return broker.QueueStats{}, classify(err, fmt.Sprintf("inspecting queue %q", queue))
	}
	return broker.QueueStats{Ready: int64(q.Messages), Consumers: q.Consumers}, nil
}
