package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/sdk/control"
)

// StartReplay tells the target listening on controlQueue to consume the
// replay queue. A repeated call
// sends the message again: a record saved after a failed call cannot tell
// whether the broker took it, and the SDK ignores a repeated START_REPLAY
// for the queue it already replays.
func (h *handoff) StartReplay(ctx context.Context, controlQueue string, rec *v1alpha1.BrokerStatus) error {
	if rec == nil || rec.ReplayQueue == "" {
		return &broker.Error{Reason: v1alpha1.ReasonReplayFailed, Err: errors.New("no replay queue recorded: StartReplay before Prepare")}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	reply, err := h.replyQueue(ctx, rec)
	if err != nil {
		return err
	}
	rec.ControlQueue = controlQueue
	return h.send(ctx, controlQueue, rec, control.NewStartReplay(rec.ReplayQueue, reply))
}

// Release tells the source listening on sourceControlQueue to let go of
// the primary queue and answer on the migration's reply queue.
func (h *handoff) Release(ctx context.Context, sourceControlQueue string, rec *v1alpha1.BrokerStatus) error {
	if rec == nil {
		return errors.New("rabbitmq: Release needs a record")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	reply, err := h.replyQueue(ctx, rec)
	if err != nil {
		return err
	}
	return h.send(ctx, sourceControlQueue, rec, control.NewRelease(reply, h.id))
}

// replyQueue declares the queue the migration reads reports from (the
// source's fence reports, the target's handoff reports); h.mu is held.
func (h *handoff) replyQueue(ctx context.Context, rec *v1alpha1.BrokerStatus) (string, error) {
	reply := control.ReplyQueuePrefix + h.id
	rec.ReplyQueue = reply
	broker.NoteDeclaredQueue(rec, reply)
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(reply, true, false, false, false, nil)
		return err
	})
	if err != nil {
		return "", classify(err, fmt.Sprintf("declaring the reply queue %q", reply))
	}
	return reply, nil
}

// Reports takes what arrived on the reply queue. A report that is not one
// is dropped with the others read: only a workload that reports writes
// there, and a malformed one says nothing the controller could use.
func (h *handoff) Reports(ctx context.Context, rec *v1alpha1.BrokerStatus) ([]control.Report, error) {
	if rec == nil || rec.ReplyQueue == "" {
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []control.Report
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		for range 100 {
			d, ok, err := ch.Get(rec.ReplyQueue, true)
			if err != nil || !ok {
				return err
			}
			if r, err := control.DecodeReport(d.Body); err == nil {
				out = append(out, r)
			}
		}
		return nil
	})
	if isNotFound(err) {
		return out, nil
	}
	return out, classify(err, fmt.Sprintf("reading reports from %q", rec.ReplyQueue))
}

// reportPoll is how often AwaitReports looks at the reply queue: a
// basic.get on the session's open channel, well under a millisecond.
const reportPoll = 5 * time.Millisecond

// AwaitReports takes what arrived on the reply queue, waiting up to within
// for the first report.
func (h *handoff) AwaitReports(ctx context.Context, rec *v1alpha1.BrokerStatus, within time.Duration) ([]control.Report, error) {
	deadline := time.Now().Add(within)
	for {
		out, err := h.Reports(ctx, rec)
		left := time.Until(deadline)
		if err != nil || len(out) > 0 || left <= 0 || rec == nil || rec.ReplyQueue == "" {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(reportPoll, left)):
		}
	}
}

// EndReplay tells the target listening on controlQueue to finish the
// replay queue and go on with its own.
func (h *handoff) EndReplay(ctx context.Context, controlQueue string, rec *v1alpha1.BrokerStatus) error {
	if rec == nil {
		return errors.New("rabbitmq: EndReplay needs a record")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rec.ControlQueue = controlQueue
	return h.send(ctx, controlQueue, rec, control.NewEndReplay())
}

// send publishes m to control queue q and returns once the broker has
// it on disk (publisher confirm). The queue is declared durable without
// arguments, as MS2M workloads declare it: other arguments would make
// RabbitMQ refuse one of the two declarations.
func (h *handoff) send(ctx context.Context, q string, rec *v1alpha1.BrokerStatus, m control.Message) error {
	exists, err := h.queueExists(ctx, q)
	if err != nil {
		return err
	}
	if !exists {
		// only a queue the migration created is the migration's to delete
		broker.NoteDeclaredQueue(rec, q)
	}
	err = h.sess.doAlone(ctx, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return err
		}
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp.Publishing{
			// The broker vouches for it: the SDK acts only on control
			// messages from the users it trusts (sdk.Config.ControlSenders).
			UserId:       h.sess.cfg.uri.Username,
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			Timestamp:    time.Now(),
			Body:         m.Encode(),
		})
		if err != nil {
			return err
		}
		acked, err := dc.WaitContext(ctx)
		switch {
		case err != nil:
			return err
		case !acked:
			return errors.New("the broker refused the message (nack)")
		}
		// RabbitMQ returns an unroutable mandatory message before it acks it
		select {
		case r := <-returns:
			return fmt.Errorf("the queue vanished before the message reached it: %s", r.ReplyText)
		default:
			return nil
		}
	})
	return classify(err, fmt.Sprintf("sending %s to %q", m.Type, q))
}

// QueueExists reports whether q exists.
func (h *handoff) QueueExists(ctx context.Context, q string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.queueExists(ctx, q)
}

func (h *handoff) queueExists(ctx context.Context, q string) (bool, error) {
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		return err
	})
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, classify(err, fmt.Sprintf("looking up queue %q", q))
}

// Waiting counts the messages waiting in a queue (0 when it does not
// exist): whether a target that polls its control queue has taken what was
// sent to it.
func (h *handoff) Waiting(ctx context.Context, q string) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		n = st.Messages
		return err
	})
	if isNotFound(err) {
		return 0, nil
	}
	return n, classify(err, fmt.Sprintf("counting the messages waiting in %q", q))
}

// DeleteControlQueue deletes pod's control queue unless something still
// consumes it; that refusal is retryable, as a gone pod's connection can
// take a heartbeat to close.
func (h *handoff) DeleteControlQueue(ctx context.Context, q string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	inUse, err := h.deleteQueue(ctx, q, true)
	if err == nil && inUse {
		return &broker.Error{Reason: v1alpha1.ReasonBrokerTopology, Retryable: true,
			Err: fmt.Errorf("control queue %q still has consumers: its pod (or one of the same name) is connected", q)}
	}
	return err
}

// deleteQueue deletes q, only when nothing consumes it if ifUnused; a
// missing queue is deleted already.
func (h *handoff) deleteQueue(ctx context.Context, q string, ifUnused bool) (inUse bool, err error) {
	err = h.sess.do(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(q, ifUnused, false, false)
		return err
	})
	switch {
	case isNotFound(err):
		return false, nil
	case ifUnused && isInUse(err):
		return true, nil
	}
	return false, classify(err, fmt.Sprintf("deleting queue %q", q))
}

// Listeners counts q's consumers; a missing queue has none.
func (h *handoff) Listeners(ctx context.Context, q string) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int
	err := h.sess.do(ctx, func(ch *amqp.Channel) error {
		st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		n = st.Consumers
		return err
	})
	if isNotFound(err) {
		return 0, nil
	}
	return n, classify(err, fmt.Sprintf("looking up queue %q", q))
}
