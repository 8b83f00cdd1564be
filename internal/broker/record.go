package broker

import (
	"slices"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Adapters note a change in the record before making it, so that a crash
// between the two leaves the record over-complete (teardown of something
// that was never made is a no-op) rather than leaking. The Note helpers
// keep repeated calls from growing the record.

// NoteDeclaredQueue adds queue to rec.DeclaredQueues unless it is listed.
func NoteDeclaredQueue(rec *v1alpha1.BrokerStatus, queue string) {
	if !slices.Contains(rec.DeclaredQueues, queue) {
		rec.DeclaredQueues = append(rec.DeclaredQueues, queue)
	}
}

// NoteDeclaredExchange adds exchange to rec.DeclaredExchanges unless it is
// listed.
func NoteDeclaredExchange(rec *v1alpha1.BrokerStatus, exchange string) {
	if !slices.Contains(rec.DeclaredExchanges, exchange) {
		rec.DeclaredExchanges = append(rec.DeclaredExchanges, exchange)
	}
}

// NoteAddedBinding adds b to rec.AddedBindings unless it is listed.
func NoteAddedBinding(rec *v1alpha1.BrokerStatus, b v1alpha1.Binding) {
	if !slices.Contains(rec.AddedBindings, b) {
		rec.AddedBindings = append(rec.AddedBindings, b)
	}
}

// NoteRemovedBinding adds b to rec.RemovedBindings unless it is listed.
func NoteRemovedBinding(rec *v1alpha1.BrokerStatus, b v1alpha1.Binding) {
	if !slices.Contains(rec.RemovedBindings, b) {
		rec.RemovedBindings = append(rec.RemovedBindings, b)
	}
}

// TornDown clears what teardown undid. ReplayQueue and ControlQueue stay:
// they name what the migration used, for status, and no longer imply that
// anything exists.
func TornDown(rec *v1alpha1.BrokerStatus) {
	rec.AddedBindings = nil
	rec.RemovedBindings = nil
	rec.DeclaredQueues = nil
	rec.DeclaredExchanges = nil
}
