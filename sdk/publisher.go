package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// PublisherConfig configures a Publisher. URL is required.
type PublisherConfig struct {
	URL string
	// Exchange and RoutingKey messages are published to ("" exchange: the
	// default exchange, RoutingKey a queue name).
	Exchange, RoutingKey string
	// ProducerID names this producer's sequence (x-ms2m-producer).
	// Consumers de-duplicate per producer: each producer on a queue needs
	// its own identity. Empty draws a fresh one, which starts a new
	// sequence: a producer that restarts without a stored identity is then
	// a new producer, and nothing it sends is mistaken for a duplicate.
	ProducerID string
	// FirstSeq is the first sequence number (default 1). A producer that
	// restarts under the same ProducerID must continue where it stopped:
	// consumers skip every number of that producer they have seen.
	FirstSeq int64
	// Window bounds the messages published but not yet confirmed (default
	// 64).
	Window int
	// Setup runs on every new channel before anything is published (declare
	// the topology here).
	Setup func(ch *amqp.Channel) error
	// Confirmed is called for every message the broker confirmed, in
	// sequence order: a test's independent reference.
	Confirmed                  func(seq int64, body []byte)
	ConnectionName             string
	ReconnectMin, ReconnectMax time.Duration
	Logger                     *slog.Logger
}

// Published is what a Publisher's broker confirmed.
type Published struct {
	// ProducerID is the identity the messages carry.
	ProducerID string `json:"producerId"`
	// Published counts confirmed messages; LastSeq is the last of them.
	Published int64 `json:"published"`
	LastSeq   int64 `json:"lastSeq"`
	// Digest is the reference digest over the confirmed messages.
	Digest Digest `json:"digest"`
	// Returned counts confirmed messages that no queue took (no binding):
	// they are in Digest but no consumer can ever apply them.
	Returned int64 `json:"returned"`
	// Republished counts messages sent again after a broker failure left
	// them unconfirmed; consumers skip the copies that arrived twice.
	Republished int64 `json:"republished"`
	Reconnects  int64 `json:"reconnects"`
}

// Publisher publishes persistent messages stamped with consecutive sequence
// numbers and waits for publisher confirms. After a broker failure it
// reconnects and publishes every unconfirmed message again, in order: some
// may arrive twice, which the sequence numbers make harmless, and none is
// lost or reordered.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger

	mu       sync.Mutex // serializes publishing; guards the fields below
	conn     *amqp.Connection
	ch       *amqp.Channel
	pending  []*outgoing
	next     int64
	bo       backoff
	sessions int
	closed   bool

	smu   sync.Mutex // guards state
	state Published
}

type outgoing struct {
	seq  int64
	body []byte
	// key and headers route this message; key "" with route false is
	// the configured RoutingKey
	key     string
	headers amqp.Table
	routed  bool
	dc      *amqp.DeferredConfirmation // nil: not sent on the current channel
	sent    bool                       // sent at least once
}

// NewPublisher checks cfg; the connection is made on the first Publish.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.URL == "" {
		return nil, errors.New("sdk: PublisherConfig needs URL")
	}
	if cfg.FirstSeq <= 0 {
		cfg.FirstSeq = 1
	}
	if cfg.ProducerID == "" {
		cfg.ProducerID = NewProducerID()
	}
	if cfg.Window <= 0 {
		cfg.Window = 64
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(5*time.Second, cfg.ReconnectMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Publisher{
		cfg:   cfg,
		log:   cfg.Logger.With("exchange", cfg.Exchange, "routingKey", cfg.RoutingKey, "producer", cfg.ProducerID),
		next:  cfg.FirstSeq,
		bo:    backoff{min: cfg.ReconnectMin, max: cfg.ReconnectMax},
		state: Published{ProducerID: cfg.ProducerID, LastSeq: cfg.FirstSeq - 1},
	}, nil
}

// NewProducerID draws a producer identity: 16 random hex digits.
func NewProducerID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return hex.EncodeToString(b[:])
}

// Publish sends body with the next sequence number and returns it. It
// blocks while Window messages await confirmation, and through broker
// failures until ctx ends. body must not be modified afterwards.
func (p *Publisher) Publish(ctx context.Context, body []byte) (int64, error) {
	return p.publish(ctx, &outgoing{body: body})
}

// PublishRouted is Publish with a routing key and headers of its own for
// this message (headers exchanges route on headers), in the same sequence
// as every other message of this producer. headers must not carry the
// sequence or producer headers, and must not be modified afterwards.
func (p *Publisher) PublishRouted(ctx context.Context, key string, headers amqp.Table, body []byte) (int64, error) {
	return p.publish(ctx, &outgoing{body: body, key: key, headers: headers, routed: true})
}

func (p *Publisher) publish(ctx context.Context, o *outgoing) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, errors.New("sdk: publisher closed")
	}
	// Before a sequence number is taken: a number taken is published.
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p.reap()
	for len(p.pending) >= p.cfg.Window {
		if err := p.settleOldest(ctx); err != nil {
			return 0, err
		}
	}
	o.seq = p.next
	p.next++
	p.pending = append(p.pending, o)
	if p.ch == nil || p.send(o) != nil {
		if err := p.recover(ctx); err != nil {
			return o.seq, err
		}
	}
	return o.seq, nil
}

// Flush waits until every published message is confirmed.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.pending) > 0 {
		if err := p.settleOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// State is what the broker confirmed so far.
func (p *Publisher) State() Published {
	p.smu.Lock()
	defer p.smu.Unlock()
	return p.state
}

// Close closes the connection; unconfirmed messages stay unconfirmed (Flush
// first).
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.drop()
	return nil
}

// send fails only with the channel; pending messages are then sent again
// from the first, so none can overtake another.
func (p *Publisher) send(o *outgoing) error {
	key := p.cfg.RoutingKey
	headers := amqp.Table{}
	if o.routed {
		key = o.key
		for k, v := range o.headers {
			headers[k] = v
		}
	}
	headers[SeqHeader], headers[ProducerHeader] = o.seq, p.cfg.ProducerID
	dc, err := p.ch.PublishWithDeferredConfirm(p.cfg.Exchange, key, true, false,
		amqp.Publishing{
			Headers:      headers,
			DeliveryMode: amqp.Persistent,
			ContentType:  "application/octet-stream",
			Timestamp:    time.Now(),
			Body:         o.body,
		})
	if err != nil {
		return err
	}
	if o.sent {
		p.smu.Lock()
		p.state.Republished++
		p.smu.Unlock()
	}
	o.dc, o.sent = dc, true
	return nil
}

// reap records the confirmations that already arrived, oldest first.
func (p *Publisher) reap() {
	for len(p.pending) > 0 && p.pending[0].dc != nil && p.pending[0].dc.Acked() {
		p.confirm()
	}
}

// settleOldest waits for the oldest message's confirmation; a negative one
// (a broker nack, or the connection's end) makes it and all after it be
// published again.
func (p *Publisher) settleOldest(ctx context.Context) error {
	o := p.pending[0]
	if o.dc == nil {
		return p.recover(ctx)
	}
	ack, err := o.dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ack {
		p.log.Warn("publish not confirmed; publishing again from it", "seq", o.seq)
		return p.recover(ctx)
	}
	p.confirm()
	return nil
}

func (p *Publisher) confirm() {
	o := p.pending[0]
	p.pending[0] = nil
	p.pending = p.pending[1:]
	p.smu.Lock()
	p.state.Published++
	p.state.LastSeq = o.seq
	p.state.Digest = p.state.Digest.Next(o.seq, o.body)
	p.smu.Unlock()
	if p.cfg.Confirmed != nil {
		p.cfg.Confirmed(o.seq, o.body)
	}
}

// recover reconnects and publishes every pending message again, in order.
func (p *Publisher) recover(ctx context.Context) error {
	for {
		p.drop()
		err := p.connect()
		if err == nil {
			for _, o := range p.pending {
				if err = p.send(o); err != nil {
					break
				}
			}
			if err == nil {
				return nil
			}
		}
		p.log.Warn("publisher reconnecting", "err", err)
		if !sleepCtx(ctx.Done(), p.bo.next()) {
			return ctx.Err()
		}
	}
}

func (p *Publisher) connect() error {
	props := amqp.NewConnectionProperties()
	if p.cfg.ConnectionName != "" {
		props["connection_name"] = p.cfg.ConnectionName
	}
	conn, err := amqp.DialConfig(p.cfg.URL, amqp.Config{
		Heartbeat: 10 * time.Second, Properties: props, Dial: amqp.DefaultDial(dialTimeout)})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil && p.cfg.Setup != nil {
		err = p.cfg.Setup(ch)
		if err == nil {
			// Setup may have closed or broken its channel; publish on a new one.
			_ = ch.Close()
			ch, err = conn.Channel()
		}
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		return err
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go p.countReturns(returns)
	p.conn, p.ch = conn, ch
	if p.sessions > 0 {
		p.smu.Lock()
		p.state.Reconnects++
		p.smu.Unlock()
	}
	p.sessions++
	p.bo.reset()
	return nil
}

// countReturns must drain the channel: the client blocks on it otherwise.
func (p *Publisher) countReturns(returns <-chan amqp.Return) {
	for r := range returns {
		p.smu.Lock()
		p.state.Returned++
		first := p.state.Returned == 1
		p.smu.Unlock()
		if first {
			p.log.Warn("messages are unroutable: no queue is bound", "replyText", r.ReplyText)
		}
	}
}

func (p *Publisher) drop() {
	if p.conn != nil {
		_ = p.conn.CloseDeadline(time.Now().Add(closeTimeout))
	}
	p.conn, p.ch = nil, nil
	for _, o := range p.pending {
		o.dc = nil
	}
}
