// Package broker is the controller's view of a workload's message stream
// during a migration. One Handoff per migration (never shared): it buffers
// the stream from before the checkpoint on, tells the restored target to
// replay it, seals the buffer at cutover and puts the broker back exactly as
// it was. Adapters implement it per broker: rabbitmq/ (AMQP 0-9-1 replay
// queue) first; log brokers (offset handoff) and single-active-consumer
// handoff fit the same calls, with a different meaning of "buffer".
package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/sdk/control"
)

// Stream is a workload's stream, as resolved from the migration's spec and
// credentials Secret.
type Stream struct {
	// URL of the broker; credentials from the Secret, when given, replace
	// any in the URL.
	URL string
	// ManagementURL of the RabbitMQ management API; empty derives it.
	ManagementURL string
	// Username and Password from credentialsSecretRef (empty: from URL).
	Username, Password string
	// Queue the workload consumes.
	Queue string
	// Exchange the producer publishes to, and the routing key binding Queue
	// to it.
	Exchange, RoutingKey string
}

// QueueStats is one queue's state.
type QueueStats struct {
	// Ready messages wait for delivery; Unacked were delivered, not acked.
	Ready, Unacked int64
	// Acked counts the acks the queue has seen since it was declared
	// (management API); 0 when unknown.
	Acked int64
	// Consumers attached to the queue.
	Consumers int
	// Prefetch is the largest prefetch (QoS) among the consumers: at most
	// that many messages each may hold delivered but not yet acked; 0 for
	// unlimited. Meaningful only when PrefetchKnown.
	Prefetch int
	// PrefetchKnown: the broker described every consumer (RabbitMQ: the
	// management API, whose consumer list lags behind new consumers).
	PrefetchKnown bool
	// ConsumerPeers are the consumers' client addresses (IPs), when the
	// broker describes every consumer (RabbitMQ: management API); nil
	// when unknown.
	ConsumerPeers []string
	// Type is the queue's type as the broker reports it (RabbitMQ:
	// classic, quorum, stream); empty when it cannot tell.
	Type string
}

// Depth is Ready + Unacked: what is still to be applied.
func (s QueueStats) Depth() int64 { return s.Ready + s.Unacked }

// Progress is the state of a handoff.
type Progress struct {
	// Buffer is the replay buffer (RabbitMQ: the replay queue).
	Buffer QueueStats
	// Primary is the workload's own queue.
	Primary QueueStats
}

// Handoff is one migration's session with the broker. Every method is
// idempotent and picks up from the record, which the controller persists in
// status.broker: after a crash, a new Handoff with the same record continues
// where the old one stopped, and Teardown removes exactly what the record
// lists.
type Handoff interface {
	// Verify checks the stream is as the spec says: the queue exists and is
	// bound to the exchange with the routing key. Nothing is changed.
	Verify(ctx context.Context) (QueueStats, error)
	// Prepare creates the replay buffer (before the checkpoint), noting
	// every change in rec before making it.
	Prepare(ctx context.Context, rec *v1alpha1.BrokerStatus) error
	// DeclareBuffer creates the replay buffer without feeding it, for a
	// source held frozen at its checkpoint: its own queue keeps, in
	// order, everything the checkpoint lacks, and a target that speaks
	// the control protocol still gets a buffer to replay (empty) before
	// END_REPLAY sends it to that queue.
	DeclareBuffer(ctx context.Context, rec *v1alpha1.BrokerStatus) error
	// Fence puts n fence messages into the workload's queue alone (not the
	// buffer), behind everything in it, and notes them in rec once the
	// broker has them: a consumer with the ms2m SDK acks them unapplied
	// and reports each one it reaches (control.FencePassed, read with
	// Reports): it has applied everything older.
	Fence(ctx context.Context, n int, rec *v1alpha1.BrokerStatus) error
	// Quiesce takes the primary queue from a source held frozen at its
	// checkpoint (the Handoff technique): it disconnects the source's
	// consumer, so the broker takes back, in order, what the source held
	// unacknowledged, then holds the queue with a consumer of its own that
	// keeps every other off it (the thawed source, and the target until
	// the source is gone). Every consumer of the queue must connect from
	// one of sourceAddrs (when given); anything else is refused. done is
	// false, with why, while the broker still lists the source's consumer.
	Quiesce(ctx context.Context, rec *v1alpha1.BrokerStatus, sourceAddrs []string) (done bool, why string, err error)
	// Disconnect closes the connections of the primary queue's consumers
	// that connect from sourceAddrs (a source held frozen, which cannot
	// close them itself), so the broker takes back, in order, what it held
	// unacknowledged; any queue type. done is false, with why, while the
	// broker still lists one of them. Other consumers are left alone.
	Disconnect(ctx context.Context, rec *v1alpha1.BrokerStatus, sourceAddrs []string) (done bool, why string, err error)
	// HoldLock checks that the queue Quiesce took is still held, taking it
	// again when the session lost it (a manager restart, a dropped
	// connection) and nothing else consumes the queue; otherwise it fails
	// with ReasonHandoffLockLost, naming who consumes it.
	HoldLock(ctx context.Context, rec *v1alpha1.BrokerStatus) error
	// Unlock lets go of the queue Quiesce took: the one message the lock
	// holds goes back to the head of the queue.
	Unlock(ctx context.Context, rec *v1alpha1.BrokerStatus) error
	// StartReplay tells the target, through its control queue, to consume
	// the buffer (START_REPLAY; the queue is declared if missing and noted
	// in rec).
	StartReplay(ctx context.Context, controlQueue string, rec *v1alpha1.BrokerStatus) error
	// Progress reports the buffer and the primary queue.
	Progress(ctx context.Context, rec *v1alpha1.BrokerStatus) (Progress, error)
	// Seal stops new messages from entering the buffer: from here on only
	// the primary queue receives them.
	Seal(ctx context.Context, rec *v1alpha1.BrokerStatus) error
	// EndReplay tells targetPod to finish the buffer and switch to the
	// primary queue (END_REPLAY).
	EndReplay(ctx context.Context, controlQueue string, rec *v1alpha1.BrokerStatus) error
	// Release tells a source that reports (it has the ms2m SDK) to let go
	// of the primary queue for good: it applies and acks what it was
	// delivered, cancels its consumer and answers control.Released (read
	// with Reports). Its pod keeps running, and serving, meanwhile. The
	// record's target control queue is left as it is.
	Release(ctx context.Context, sourceControlQueue string, rec *v1alpha1.BrokerStatus) error
	// Reports takes the target's reports that arrived since the last call
	// (START_REPLAY names where they go), oldest first.
	Reports(ctx context.Context, rec *v1alpha1.BrokerStatus) ([]control.Report, error)
	// AwaitReports is Reports that waits, up to within, for a report when
	// none has arrived yet: the cutover's answers (RELEASED, REPLAY_DONE)
	// come within milliseconds, sooner than the next reconcile.
	AwaitReports(ctx context.Context, rec *v1alpha1.BrokerStatus, within time.Duration) ([]control.Report, error)
	// Listeners counts the consumers of a queue (0 when it does not exist):
	// whether a restored target already listens on a control queue.
	Listeners(ctx context.Context, queue string) (int, error)
	// QueueExists reports whether a queue exists: whether a workload that
	// polls its control queue declared it.
	QueueExists(ctx context.Context, queue string) (bool, error)
	// Waiting counts the messages waiting in a queue (0 when it does not
	// exist): whether a target has taken its control messages.
	Waiting(ctx context.Context, queue string) (int, error)
	// DeleteControlQueue removes a gone pod's control queue if nothing
	// consumes it any more.
	DeleteControlQueue(ctx context.Context, controlQueue string) error
	// Teardown undoes everything rec lists (added bindings removed, removed
	// bindings restored, declared queues deleted) and clears those entries.
	Teardown(ctx context.Context, rec *v1alpha1.BrokerStatus) error
	// Close releases the session's connection.
	Close() error
}

// Dialer opens a Handoff for one migration; migrationID names what the
// migration creates on the broker, unique per migration.
type Dialer func(ctx context.Context, s Stream, migrationID string) (Handoff, error)

// Error is a broker failure with the status reason it maps to.
type Error struct {
	// Reason is a v1alpha1.Reason* constant.
	Reason string
	// Retryable errors may go away (connection refused, timeouts).
	Retryable bool
	Err       error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Unreachable wraps a connection failure.
func Unreachable(err error) error {
	return &Error{Reason: v1alpha1.ReasonBrokerUnreachable, Retryable: true, Err: err}
}

// InvalidTopology wraps a stream that is not as the spec says.
func InvalidTopology(format string, args ...any) error {
	return &Error{Reason: v1alpha1.ReasonBrokerTopology, Err: fmt.Errorf(format, args...)}
}

// BadCredentials wraps an authentication refusal.
func BadCredentials(err error) error {
	return &Error{Reason: v1alpha1.ReasonCredentials, Err: err}
}

// ReasonOf is the status reason of err (ReasonBrokerUnreachable for errors
// an adapter did not classify).
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return v1alpha1.ReasonBrokerUnreachable
}

// IsRetryable reports whether err may go away by itself.
func IsRetryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return true
}
