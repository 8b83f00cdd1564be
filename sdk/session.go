package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
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

var alwaysReady = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// session runs one broker session until it fails, ctx ends or a restore is
// detected.
func (c *Consumer) session(ctx context.Context, bo *backoff, sessions *int) error {
	id := c.identity()
	s, err := c.open(id)
	if err != nil {
		return err
	}
	defer func() {
		if ctx.Err() != nil {
			dropControlQueue(s, id.ControlQueue())
		}
		_ = s.conn.CloseDeadline(time.Now().Add(closeTimeout))
	}()

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
	c.connected, c.control = true, id.ControlQueue()
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
		c.answerRelease(s)
		if err := c.sendReports(s); err != nil {
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
		if err := c.sendReports(s); err != nil {
			return err
		}
	}
}

// afterHandlerError pauses consuming and returns the failed message and
// those after it to the queue in order; other errors end the session.
func (c *Consumer) afterHandlerError(s *session, err error) error {
	if !errors.Is(err, errHandlerFailed) {
		return err
	}
	c.pauseAfterFailure()
	return c.returnInOrder(s)
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
		if err := c.deliver(ctx, d, s.sub.queue, s.sub.replay); err != nil {
			return c.afterHandlerError(s, err)
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

// dropControlQueue removes the control queue of a consumer that is shut
// down (its pod is going: a rollout, a scale-down, its namespace deleted),
// so that pods that come and go leave no durable queue behind on the
// broker. The queue stays if a control message waits in it (the control
// channel, closed first, hands back what it had not acknowledged) or
// something else consumes it (a pod of the same name restored meanwhile).
// A pod that is killed keeps its queue; one of the same name reuses it.
func dropControlQueue(s *session, q string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.ctrl.Close()
		ch, err := s.conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(q, true, true, false)
		_ = ch.Close()
	}()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		// the connection's close ends the wait for an unanswering broker
	}
}
