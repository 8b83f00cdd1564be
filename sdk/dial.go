package sdk

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

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
	dial := c.cfg.Dial
	if dial == nil {
		dial = amqp.DefaultDial(dialTimeout)
	}
	conn, err := amqp.DialConfig(c.cfg.URL, amqp.Config{
		Heartbeat:  hb,
		Properties: props,
		Dial:       dial,
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
	q := id.ControlQueue()
	// Durable and without arguments: the controller declares it the same
	// way, whichever of the two comes first.
	if _, err = s.ctrl.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("declare control queue %s: %w", q, err)
	}
	if s.ctrlIn, err = s.ctrl.Consume(q, "", false, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("consume control queue %s: %w", q, err)
	}

	if err := c.openData(s); err != nil {
		return nil, err
	}
	if c.cfg.DeclareQueue {
		if _, err = s.data.QueueDeclare(c.cfg.Queue, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("declare %s: %w", c.cfg.Queue, err)
		}
	}
	return s, nil
}

// openData opens the session's data channel with the consumer's prefetch.
func (c *Consumer) openData(s *session) error {
	var err error
	if s.data, err = s.conn.Channel(); err != nil {
		return fmt.Errorf("data channel: %w", err)
	}
	s.dataClosed = s.data.NotifyClose(make(chan *amqp.Error, 1))
	if err = s.data.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	return nil
}
