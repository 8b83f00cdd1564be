package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/internal/broker"
)

// handshakeTimeout bounds connecting when the caller's context does not.
const handshakeTimeout = 15 * time.Second

// session is a handoff's AMQP connection, redialled when the broker dropped
// it (a broker restart mid-migration), so a long migration survives it.
type session struct {
	cfg  config
	name string
	conn *amqp.Connection
	idle *amqp.Channel
	// closed is set by Close: a redial after it would open a connection
	// nobody closes
	closed bool
}

var errClosed = errors.New("rabbitmq: the handoff is closed")

func (s *session) connect(ctx context.Context) (*amqp.Connection, error) {
	if s.closed {
		return nil, errClosed
	}
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn, nil
	}
	props := amqp.NewConnectionProperties()
	props["connection_name"] = s.name
	conn, err := amqp.DialConfig(s.cfg.url, amqp.Config{
		// explicit SASL wins over the URL's userinfo
		SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: s.cfg.uri.Username, Password: s.cfg.uri.Password}},
		Vhost:      s.cfg.uri.Vhost,
		Properties: props,
		Dial:       dialContext(ctx),
	})
	if err != nil {
		return nil, classify(err, fmt.Sprintf("connecting to %s as %q", s.addr(), s.cfg.uri.Username))
	}
	s.conn = conn
	return conn, nil
}

func (s *session) addr() string {
	return fmt.Sprintf("%s (vhost %q)", net.JoinHostPort(s.cfg.uri.Host, fmt.Sprint(s.cfg.uri.Port)), s.cfg.uri.Vhost)
}

// dialContext makes the TCP connect and the AMQP handshake honour ctx;
// amqp091 clears the deadline once the handshake is done.
func dialContext(ctx context.Context) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: handshakeTimeout}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		deadline := time.Now().Add(handshakeTimeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		if err := c.SetDeadline(deadline); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// do runs fn on the session's channel. A channel exception (a failed
// passive declare, a refused delete) closes a channel, so after any error
// the channel is discarded and the next call opens another.
func (s *session) do(ctx context.Context, fn func(*amqp.Channel) error) error {
	return s.run(ctx, true, fn)
}

// doAlone runs fn on a channel of its own, closed afterwards: publisher
// confirms and return listeners must not outlive the call.
func (s *session) doAlone(ctx context.Context, fn func(*amqp.Channel) error) error {
	return s.run(ctx, false, fn)
}

// run runs fn aside, since amqp091's calls ignore contexts: a caller that
// gives up drops the connection, which ends fn, and the next call redials.
// The idle channel is handed to fn and back, so that an abandoned fn never
// shares it.
func (s *session) run(ctx context.Context, reuse bool, fn func(*amqp.Channel) error) error {
	if err := ctx.Err(); err != nil {
		return broker.Unreachable(fmt.Errorf("gave up before asking %s: %w", s.addr(), err))
	}
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	var ch *amqp.Channel
	if reuse {
		ch, s.idle = s.idle, nil
	}
	type result struct {
		idle *amqp.Channel
		err  error
	}
	done := make(chan result, 1)
	go func() {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = conn.Channel(); err != nil {
				done <- result{nil, err}
				return
			}
		}
		err := fn(ch)
		if err != nil || !reuse {
			// after a channel exception it is closed already and Close
			// only says so
			_ = ch.Close()
			ch = nil
		}
		done <- result{ch, err}
	}()
	select {
	case r := <-done:
		s.idle = r.idle
		return r.err
	case <-ctx.Done():
		s.drop()
		return broker.Unreachable(fmt.Errorf("%s did not answer in time: %w", s.addr(), ctx.Err()))
	}
}

// drop abandons the connection without waiting for the broker.
func (s *session) drop() {
	if s.conn != nil {
		_ = s.conn.CloseDeadline(time.Now()) // closed whatever it returns
		s.conn, s.idle = nil, nil
	}
}

func (s *session) close() error {
	s.closed = true
	if s.conn == nil || s.conn.IsClosed() {
		s.conn, s.idle = nil, nil
		return nil
	}
	err := s.conn.CloseDeadline(time.Now().Add(5 * time.Second))
	s.conn, s.idle = nil, nil
	if err != nil {
		return broker.Unreachable(fmt.Errorf("closing the connection to %s: %w", s.addr(), err))
	}
	return nil
}
