package sdk

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk/control"
)

// onControl handles one control message. Whatever it says, it is acked:
// the route machine ignores what is out of place, and a message this
// protocol cannot parse would otherwise come back forever.
func (c *Consumer) onControl(d amqp.Delivery) error {
	c.mu.Lock()
	c.counters.ControlMessages++
	c.mu.Unlock()
	m, err := control.Decode(d.Body)
	switch {
	case !c.fromController(d, "control message"):
	case err != nil:
		c.mu.Lock()
		c.counters.ControlIgnored++
		c.mu.Unlock()
		c.log.Warn("control message ignored", "err", err)
	case m.Type == control.StartReplay:
		p, _ := m.Replay() // Decode checked it
		c.log.Info("START_REPLAY", "replayQueue", p.Queue)
		c.step(event{kind: evStartReplay, queue: p.Queue})
		c.startReplay(p.Queue, p.ReplyTo)
	case m.Type == control.EndReplay:
		c.log.Info("END_REPLAY")
		c.step(event{kind: evEndReplay})
	case m.Type == control.Release:
		p, _ := m.ReleaseOf() // Decode checked it
		c.log.Info("RELEASE", "migration", p.Migration)
		c.step(event{kind: evRelease})
		c.mu.Lock()
		if c.route.mode == Released {
			c.release = &p
		}
		c.mu.Unlock()
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack control message: %w", err)
	}
	return nil
}

// fromController says whether d was published by a user allowed to steer
// the consumer (Config.ControlSenders): the broker vouches for a message's
// user-id, and a message without one vouches for nothing. Anyone who may
// publish to the vhost could otherwise start a replay, or fake a fence.
// A refusal is counted and logged; the caller acks d.
func (c *Consumer) fromController(d amqp.Delivery, what string) bool {
	if d.UserId != "" && slices.Contains(c.cfg.ControlSenders, d.UserId) {
		return true
	}
	c.mu.Lock()
	c.counters.ControlRefused++
	c.mu.Unlock()
	from := "no user-id"
	if d.UserId != "" {
		from = "user " + strconv.Quote(d.UserId)
	}
	c.log.Warn(what+" refused: sent with "+from+", and only the broker users "+strings.Join(c.cfg.ControlSenders, ", ")+
		" (ControlSenders) steer this consumer", "on", d.RoutingKey)
	return false
}

// answerRelease queues RELEASED once the session consumes nothing but its
// control queue: the primary queue's consumer is cancelled and what it had
// delivered is applied and acked, so the broker holds the rest for the
// target.
func (c *Consumer) answerRelease(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.release == nil || c.route.mode != Released || s.sub != nil {
		return
	}
	c.send(control.Report{Type: control.Released, Pod: c.known.Name, Fence: c.release.Migration}, c.release.ReplyTo)
	c.release = nil
}

// sendReports publishes the queued reports on the control channel, in
// order; what fails stays queued for the next session.
func (c *Consumer) sendReports(s *session) error {
	for {
		c.mu.Lock()
		if len(c.outbox) == 0 {
			c.mu.Unlock()
			return nil
		}
		r, to := c.outbox[0], c.replyTo[0]
		c.mu.Unlock()
		err := s.ctrl.Publish("", to, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: r.Encode()})
		if err != nil {
			return fmt.Errorf("report %s to %s: %w", r.Type, to, err)
		}
		c.log.Info("reported "+r.Type, "to", to, "gaps", r.Gaps, "missing", r.Missing, "duplicates", r.Duplicates)
		c.mu.Lock()
		c.outbox, c.replyTo = c.outbox[1:], c.replyTo[1:]
		c.mu.Unlock()
	}
}
