package rabbitmq

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

// classify maps an AMQP failure to the status reason it means. Errors
// already classified pass through.
func classify(err error, doing string) error {
	if err == nil {
		return nil
	}
	var be *broker.Error
	if errors.As(err, &be) {
		return err
	}
	wrapped := fmt.Errorf("%s: %w", doing, err)
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused:
			return broker.BadCredentials(wrapped)
		case amqp.NotFound, amqp.PreconditionFailed, amqp.ResourceLocked, amqp.NotAllowed:
			// NotAllowed: the vhost does not exist
			return broker.InvalidTopology("%w", wrapped)
		}
	}
	return broker.Unreachable(wrapped)
}

func hasCode(err error, code int) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == code
}

func isNotFound(err error) bool { return hasCode(err, amqp.NotFound) }

// isInUse is a delete-if-unused refused because the queue has consumers.
func isInUse(err error) bool { return hasCode(err, amqp.PreconditionFailed) }

func unsupported(format string, args ...any) error {
	return &broker.Error{Reason: v1alpha1.ReasonUnsupported, Err: fmt.Errorf(format, args...)}
}
