package broker

// Degraded is implemented by a Handoff that can run with less than it was
// configured for (RabbitMQ without its management API: no binding check,
// no unacked counts or consumer addresses). Such a handoff does not fail a
// migration for it; the controller shows it (a condition or an Event).
type Degraded interface {
	// Degraded says what the handoff currently does without, and why; nil
	// when it has everything.
	Degraded() error
}

// DegradedBy is h's Degraded() when h implements it, nil otherwise.
func DegradedBy(h Handoff) error {
	if d, ok := h.(Degraded); ok {
		return d.Degraded()
	}
	return nil
}
