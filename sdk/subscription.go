package sdk

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// subscription is one basic.consume on the data channel.
type subscription struct {
	queue, tag string
	replay     bool
	in         <-chan amqp.Delivery
}

// reconcile makes the session consume what the route says.
func (c *Consumer) reconcile(ctx context.Context, s *session) error {
	r := c.currentRoute()
	want := r.source(c.cfg.Queue)
	if s.sub != nil && s.sub.queue != want {
		// A live session delivered these in order, and the mode change
		// (END_REPLAY, a new START_REPLAY) wants them applied first.
		if err := c.unsubscribe(ctx, s); err != nil {
			return c.afterHandlerError(s, err)
		}
	}
	if want == "" || s.sub != nil || c.paused() {
		return nil
	}
	s.tags++
	tag := fmt.Sprintf("ms2m-sdk-%d", s.tags)
	in, err := s.data.Consume(want, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", want, err)
	}
	s.sub = &subscription{queue: want, tag: tag, replay: r.mode == Replaying, in: in}
	return nil
}

// unsubscribe cancels the data consumer and applies what it had delivered.
// A handler error stops that: see returnInOrder.
func (c *Consumer) unsubscribe(ctx context.Context, s *session) error {
	sub := s.sub
	s.sub = nil
	if err := s.data.Cancel(sub.tag, false); err != nil {
		return fmt.Errorf("cancel consumer of %s: %w", sub.queue, err)
	}
	// After basic.cancel-ok the broker delivers nothing more for the tag,
	// and the client closes the channel once all it got is handed out.
	for d := range sub.in {
		if err := c.deliver(ctx, d, sub.queue, sub.replay); err != nil {
			return err
		}
	}
	return nil
}

// returnInOrder hands back, after a handler error, the failed message and
// everything delivered after it, so that nothing overtakes the failed
// message: it closes the data channel and opens another. Closing is what
// returns deliveries in their order on every queue type: a quorum queue
// puts a message nacked with requeue behind the messages that followed
// it, where it would be taken for a duplicate once those were applied.
func (c *Consumer) returnInOrder(s *session) error {
	s.sub = nil
	if err := s.data.Close(); err != nil {
		return fmt.Errorf("closing the data channel after a handler error: %w", err)
	}
	return c.openData(s)
}

// drainOne takes one message from the replay queue being drained; an empty
// queue ends the drain.
func (c *Consumer) drainOne(ctx context.Context, s *session) error {
	q := c.currentRoute().replay
	d, ok, err := s.data.Get(q, false)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			// Gone (torn down): nothing is left to drain. Any message it
			// held that this consumer never saw shows up as a gap.
			c.log.Warn("replay queue vanished while draining; switching to the primary queue", "replayQueue", q)
			c.step(event{kind: evDrained})
		}
		return fmt.Errorf("get from %s: %w", q, err)
	}
	if !ok {
		c.step(event{kind: evDrained})
		return nil
	}
	if err := c.deliver(ctx, d, q, true); err != nil {
		return c.afterHandlerError(s, err)
	}
	return nil
}
