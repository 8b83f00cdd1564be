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
		if err := c.unsubscribe(ctx, s, true); err != nil {
			return err
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

// unsubscribe cancels the data consumer. What it had delivered is applied
// (apply) or handed back to the broker in order (after a handler error, so
// that nothing overtakes the failed message).
func (c *Consumer) unsubscribe(ctx context.Context, s *session, apply bool) error {
	sub := s.sub
	s.sub = nil
	if err := s.data.Cancel(sub.tag, false); err != nil {
		return fmt.Errorf("cancel consumer of %s: %w", sub.queue, err)
	}
	// After basic.cancel-ok the broker delivers nothing more for the tag,
	// and the client closes the channel once all it got is handed out.
	for d := range sub.in {
		if !apply {
			if err := d.Nack(false, true); err != nil {
				return fmt.Errorf("requeue: %w", err)
			}
			continue
		}
		err := c.deliver(ctx, d, sub.queue, sub.replay)
		if errors.Is(err, errHandlerFailed) {
			c.pauseAfterFailure()
			apply = false
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
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
	err = c.deliver(ctx, d, q, true)
	if errors.Is(err, errHandlerFailed) {
		c.pauseAfterFailure()
		return nil
	}
	return err
}
