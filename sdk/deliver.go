package sdk

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk/control"
)

// errHandlerFailed: the handler refused a message, left unacknowledged.
var errHandlerFailed = errors.New("handler failed")

// deliver applies d, or acks it unapplied when its sequence number was
// applied already. A handler error leaves d unacknowledged (the caller
// returns it in order) and the snapshot as it was. Other errors are the
// broker's: the session is over.
//
// A message is recorded as applied before its ack: if the ack is lost, the
// broker delivers it again and the sequence number makes it a duplicate.
func (c *Consumer) deliver(ctx context.Context, d amqp.Delivery, queue string, replayed bool) error {
	if IsFence(d.Headers) {
		if !c.fromController(d, "fence") {
			return ack(d)
		}
		c.mu.Lock()
		c.counters.Fences++
		if d.ReplyTo != "" {
			// Deliveries are applied in order: reaching the fence means
			// everything queued before it is applied (its migration may
			// checkpoint now).
			fence, _ := d.Headers[FenceHeader].(string)
			c.send(control.Report{Type: control.FencePassed, Pod: c.known.Name, Fence: fence, Releases: true}, d.ReplyTo)
		}
		c.mu.Unlock()
		return ack(d)
	}
	seq, sequenced, herr := SeqOf(d.Headers)
	if herr != nil {
		seq, sequenced = 0, false
	}
	producer := ProducerOf(d.Headers)
	m := Message{Producer: producer, Seq: seq, Sequenced: sequenced, Body: d.Body, Headers: d.Headers,
		Queue: queue, Replayed: replayed, Redelivered: d.Redelivered}

	c.applyMu.Lock()
	snap := c.snap // written only under applyMu
	if snap.IsDuplicate(producer, seq, sequenced) {
		c.applyMu.Unlock()
		c.mu.Lock()
		c.counters.Duplicates++
		c.mu.Unlock()
		if h := c.cfg.Hooks.Skipped; h != nil {
			h(m)
		}
		return ack(d)
	}
	if err := c.cfg.Handler(ctx, m); err != nil {
		c.applyMu.Unlock()
		c.mu.Lock()
		c.counters.HandlerErrors++
		c.mu.Unlock()
		// Left unacknowledged: the caller hands it back with everything
		// after it, in order (returnInOrder).
		c.log.Warn("handler failed; message returned to the queue", "seq", seq, "err", err)
		return errHandlerFailed
	}
	next, missing := snap.Apply(producer, seq, sequenced, d.Body)
	c.mu.Lock()
	c.snap = next
	c.counters.Applied++
	if replayed {
		c.counters.Replayed++
	}
	if missing > 0 {
		c.counters.Gaps++
		c.counters.Missing += missing
		if c.reply != "" {
			// Mid-handoff: say so now, while the source may still serve
			// (the controller rolls back rather than lose the hole).
			c.report(control.StreamGap, c.route.replay)
		}
	}
	if herr != nil {
		c.counters.Malformed++
	}
	c.mu.Unlock()
	c.applyMu.Unlock()
	c.retry.reset()

	if missing > 0 {
		c.log.Error("sequence gap: messages never reached this consumer", "producer", producer, "seq", seq,
			"missing", missing, "after", snap.Position(producer).LastSeq, "queue", queue)
	}
	if herr != nil {
		c.log.Warn("applied as unsequenced", "err", herr)
	}
	if h := c.cfg.Hooks.Applied; h != nil {
		h(m, next)
	}
	return ack(d)
}

func ack(d amqp.Delivery) error {
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}
