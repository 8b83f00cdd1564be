package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Handler applies one message to the application's state. Messages arrive
// one at a time, in order. A nil return acks the message and advances the
// sequence; an error requeues it (and everything prefetched after it, so
// that order is kept) and it comes back after a pause.
type Handler func(ctx context.Context, m Message) error

// Message is one delivery handed to a Handler.
type Message struct {
	// Producer is the identity of the producer whose sequence Seq counts
	// ("" when the message names none).
	Producer string
	// Seq is the sequence number; meaningful when Sequenced.
	Seq       int64
	Sequenced bool
	Body      []byte
	Headers   amqp.Table
	// Queue the message was taken from; Replayed when that is a replay
	// queue.
	Queue       string
	Replayed    bool
	Redelivered bool
}

// Config configures a Consumer. URL, Queue and Handler are required.
type Config struct {
	// URL of the broker (amqp:// or amqps://).
	URL string
	// Queue is the primary queue: the workload's own.
	Queue string
	// DeclareQueue declares Queue (durable, no arguments) on every session;
	// off, the queue must exist.
	DeclareQueue bool
	Handler      Handler
	// Prefetch is the number of unacked deliveries the broker may push
	// ahead (default 1). The handler still sees one at a time.
	Prefetch int

	// Identity files; zero means DefaultIdentityFiles.
	Identity IdentityFiles
	// IdentityPoll is how often the identity files are re-read (default
	// 150 ms); they are also read before every reconnect.
	IdentityPoll time.Duration

	// Restore starts the consumer from a snapshot, restored: it consumes
	// nothing but its control queue until START_REPLAY. For applications
	// that move their state themselves, and for tests that play a restore
	// without a checkpoint.
	Restore *Snapshot

	// Dial opens the connection to the broker (default: a TCP dial with a
	// 30 s timeout): a proxy, or a test standing in for a frozen process
	// that cannot reconnect.
	Dial func(network, addr string) (net.Conn, error)

	// ConnectionName is shown by the broker (default "ms2m-sdk <pod>").
	ConnectionName string
	// Heartbeat of the AMQP connection (default 10 s): a peer gone without
	// a TCP reset is noticed after two missed beats.
	Heartbeat time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// broker sessions (default 100 ms and 5 s); RetryMin is the first pause
	// after a handler error, doubling up to ReconnectMax (default 200 ms).
	ReconnectMin, ReconnectMax, RetryMin time.Duration

	// ControlSenders are the broker users whose control messages (START_REPLAY,
	// END_REPLAY, fences) the consumer acts on; the others are acked and
	// ignored. RabbitMQ checks a message's user-id against the user that
	// published it, so no one can send as another. Default: the user of
	// URL, the workload's own, which is the one the migration controller
	// connects as with the migration's broker credentials.
	ControlSenders []string

	// Logger gets warnings and errors, and handoff milestones at Info
	// (default slog.Default()).
	Logger *slog.Logger
	Hooks  Hooks
}

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" || c.Queue == "" || c.Handler == nil {
		return c, errors.New("sdk: Config needs URL, Queue and Handler")
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 1
	}
	if c.Identity == (IdentityFiles{}) {
		c.Identity = DefaultIdentityFiles()
	}
	if c.IdentityPoll <= 0 {
		c.IdentityPoll = 150 * time.Millisecond
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = max(5*time.Second, c.ReconnectMin)
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.ControlSenders) == 0 {
		uri, err := amqp.ParseURI(c.URL)
		if err != nil {
			return c, fmt.Errorf("sdk: URL: %w", err)
		}
		c.ControlSenders = []string{uri.Username}
	}
	return c, nil
}
