package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk/control"
)

// errRestored ends a session whose process was restored into a new pod: its
// control queue is the old pod's, and what it had prefetched is discarded
// (see the package documentation).
var errRestored = errors.New("restored into a new pod")

const (
	dialTimeout  = 10 * time.Second
	closeTimeout = time.Second
)

// session is one broker connection: a channel for the control queue and one
// for data, so that a data channel closed by the broker (a missing replay
// queue, say) and the prefetch limit never concern control messages.
type session struct {
	conn       *amqp.Connection
	ctrl, data *amqp.Channel
	ctrlIn     <-chan amqp.Delivery
	connClosed <-chan *amqp.Error
	ctrlClosed <-chan *amqp.Error
	dataClosed <-chan *amqp.Error
	sub        *subscription
	tags       int
}

// subscription is one basic.consume on the data channel.
type subscription struct {
	queue, tag string
	replay     bool
	in         <-chan amqp.Delivery
}

var alwaysReady = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// session runs one broker session until it fails, ctx ends or a restore is
// detected.
func (c *Consumer) session(ctx context.Context, bo *backoff, sessions *int) error {
	id := c.identity()
	s, err := c.open(id)
	if err != nil {
		return err
	}
	defer func() { _ = s.conn.CloseDeadline(time.Now().Add(closeTimeout)) }()

	// The identity may have changed while dialing; the control queue just
	// consumed would then be the old pod's.
	if c.checkIdentity() {
		return errRestored
	}
	c.mu.Lock()
	if *sessions > 0 {
		c.counters.Reconnects++
	}
	*sessions++
	c.connected, c.control = true, control.QueueName(id.Name)
	c.mu.Unlock()
	if h := c.cfg.Hooks.Connected; h != nil {
		h()
	}

	tick := time.NewTicker(c.cfg.IdentityPoll)
	defer tick.Stop()
	for {
		if err := c.reconcile(ctx, s); err != nil {
			return err
		}
		// Healthy once consuming what the route wants: only then may the
		// next failure be retried at once. A queue that is missing fails
		// after the dial, and must not make the consumer spin.
		if s.sub != nil || c.currentRoute().source(c.cfg.Queue) == "" {
			bo.reset()
		}
		var data <-chan amqp.Delivery
		if s.sub != nil {
			data = s.sub.in
		}
		var drain <-chan struct{}
		var resume <-chan time.Time
		var pause *time.Timer
		if c.paused() {
			pause = time.NewTimer(time.Until(c.retryAt))
			resume = pause.C
		} else if c.currentRoute().mode == Draining {
			drain = alwaysReady
		}

		err := c.wait(ctx, s, tick.C, data, resume, drain)
		if pause != nil {
			pause.Stop()
		}
		if err != nil {
			return err
		}
	}
}

// wait handles the first of the session's events; nil to go on.
func (c *Consumer) wait(ctx context.Context, s *session, tick <-chan time.Time,
	data <-chan amqp.Delivery, resume <-chan time.Time, drain <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case e := <-s.connClosed:
		return fmt.Errorf("connection closed: %v", e)
	case e := <-s.ctrlClosed:
		return fmt.Errorf("control channel closed: %v", e)
	case e := <-s.dataClosed:
		return fmt.Errorf("data channel closed: %v", e)
	case d, ok := <-s.ctrlIn:
		if !ok {
			return errors.New("control queue consumer cancelled by the broker")
		}
		if err := c.onControl(d); err != nil {
			return err
		}
	case d, ok := <-data:
		if !ok {
			q := s.sub.queue
			s.sub = nil
			return fmt.Errorf("consumer of %s cancelled by the broker", q)
		}
		err := c.deliver(ctx, d, s.sub.queue, s.sub.replay)
		if errors.Is(err, errHandlerFailed) {
			c.pauseAfterFailure()
			err = c.unsubscribe(ctx, s, false)
		}
		if err != nil {
			return err
		}
	case <-tick:
		if c.checkIdentity() {
			return errRestored
		}
	case <-resume:
	case <-drain:
		return c.drainOne(ctx, s)
	}
	return nil
}

// open dials and sets up the control queue's consumer and the data channel.
func (c *Consumer) open(id Identity) (_ *session, err error) {
	name := c.cfg.ConnectionName
	if name == "" {
		name = "ms2m-sdk " + id.Name
	}
	props := amqp.NewConnectionProperties()
	props["connection_name"] = name
	hb := c.cfg.Heartbeat
	if hb <= 0 {
		hb = 10 * time.Second
	}
	conn, err := amqp.DialConfig(c.cfg.URL, amqp.Config{
		Heartbeat:  hb,
		Properties: props,
		Dial:       amqp.DefaultDial(dialTimeout),
		// Recovery stays nil: the library's own reconnect would re-subscribe
		// the primary queue after a restore, before the identity check.
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer func() {
		if err != nil {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		}
	}()
	s := &session{conn: conn, connClosed: conn.NotifyClose(make(chan *amqp.Error, 1))}

	if s.ctrl, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	s.ctrlClosed = s.ctrl.NotifyClose(make(chan *amqp.Error, 1))
	q := control.QueueName(id.Name)
	// Durable and without arguments: the controller declares it the same
	// way, whichever of the two comes first.
	if _, err = s.ctrl.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("declare control queue %s: %w", q, err)
	}
	if s.ctrlIn, err = s.ctrl.Consume(q, "", false, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("consume control queue %s: %w", q, err)
	}

	if s.data, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("data channel: %w", err)
	}
	s.dataClosed = s.data.NotifyClose(make(chan *amqp.Error, 1))
	if err = s.data.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	if c.cfg.DeclareQueue {
		if _, err = s.data.QueueDeclare(c.cfg.Queue, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("declare %s: %w", c.cfg.Queue, err)
		}
	}
	return s, nil
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

// onControl handles one control message. Whatever it says, it is acked:
// the route machine ignores what is out of place, and a message this
// protocol cannot parse would otherwise come back forever.
func (c *Consumer) onControl(d amqp.Delivery) error {
	c.mu.Lock()
	c.counters.ControlMessages++
	c.mu.Unlock()
	m, err := control.Decode(d.Body)
	switch {
	case err != nil:
		c.mu.Lock()
		c.counters.ControlIgnored++
		c.mu.Unlock()
		c.log.Warn("control message ignored", "err", err)
	case m.Type == control.StartReplay:
		p, _ := m.Replay() // Decode checked it
		c.log.Info("START_REPLAY", "replayQueue", p.Queue)
		c.step(event{kind: evStartReplay, queue: p.Queue})
	case m.Type == control.EndReplay:
		c.log.Info("END_REPLAY")
		c.step(event{kind: evEndReplay})
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack control message: %w", err)
	}
	return nil
}
