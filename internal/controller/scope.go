package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/control"
)

// scope is one reconcile of one migration: the object, "now" (read once, so
// every decision of the reconcile sees the same time) and the migration's
// own broker session, opened on first use and closed at the end.
type scope struct {
	r   *Reconciler
	m   *v1alpha1.StatefulMigration
	now time.Time
	id  string

	handoff broker.Handoff
}

func (r *Reconciler) newScope(_ context.Context, m *v1alpha1.StatefulMigration) *scope {
	return &scope{r: r, m: m, now: r.Clock.Now(), id: migration.MigrationID(m.Name, string(m.UID))}
}

func (s *scope) close() {
	if s.handoff == nil {
		return
	}
	if !s.m.Status.Phase.IsFinal() {
		s.r.brokers.keep(s.m.UID, s.handoff)
		return
	}
	s.r.brokers.drop(s.m.UID)
	_ = s.handoff.Close()
}

// sessions are broker sessions kept open between reconciles, by migration.
type sessions struct {
	mu sync.Mutex
	m  map[types.UID]broker.Handoff
	// closed: the manager is stopping; a reconcile that ends after that
	// closes its session rather than keeping it (and its lock) open
	closed bool
}

func (c *sessions) keep(uid types.UID, h broker.Handoff) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = h.Close()
		return
	}
	if c.m == nil {
		c.m = map[types.UID]broker.Handoff{}
	}
	c.m[uid] = h
}

func (c *sessions) get(uid types.UID) broker.Handoff {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[uid]
}

// closeAll closes every kept session (the manager stops): the broker lets
// go of their locks, as it would for a manager that died.
func (c *sessions) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for uid, h := range c.m {
		_ = h.Close()
		delete(c.m, uid)
	}
}

func (c *sessions) drop(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, uid)
}

// enter moves to phase p, with an Event and the Progressing condition.
func (s *scope) enter(p v1alpha1.Phase) {
	st := &s.m.Status
	if st.Phase == p {
		return
	}
	from := st.Phase
	// The phase left ends when its handler decides, not when the reconcile
	// began: the work of that reconcile (Pending's plan, a dump's last
	// look) belongs to the phase it was done in.
	at := s.now
	if from != "" {
		at = s.r.Clock.Now()
	}
	migration.EnterPhase(st, p, at)
	observePhaseTransition(s.m, from)
	if p.IsFinal() {
		return
	}
	s.condition(v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonPhaseEntered, "phase "+string(p))
	if p != v1alpha1.PhasePending {
		s.event(corev1.EventTypeNormal, string(p), "Phase", "entered phase %s", p)
	}
}

// condition records a condition on the migration.
func (s *scope) condition(typ string, status metav1.ConditionStatus, reason, msg string) {
	migration.SetCondition(&s.m.Status, s.m.Generation, typ, status, reason, msg, s.now)
}

// done records that a step has happened.
func (s *scope) done(typ, msg string) {
	s.condition(typ, metav1.ConditionTrue, v1alpha1.ReasonDone, msg)
}

func (s *scope) isDone(typ string) bool { return migration.IsTrue(&s.m.Status, typ) }

// fail records why the migration cannot go on; the next reconcile rolls it
// back (or, past the point of no return, stops it) and only then marks it
// Failed.
func (s *scope) fail(reason, format string, args ...any) (reconcile.Result, error) {
	st := &s.m.Status
	if st.FailureReason != "" {
		return next(), nil
	}
	msg := fmt.Sprintf(format, args...)
	st.FailureReason, st.FailureMessage, st.FailedPhase = reason, msg, st.Phase
	s.condition(v1alpha1.ConditionProgressing, metav1.ConditionFalse, reason, "rolling back: "+msg)
	s.event(corev1.EventTypeWarning, reason, "Fail", "%s", msg)
	log.FromContext(context.Background()).Info("migration failed", "migration", s.m.Name, "reason", reason, "message", msg)
	return next(), nil
}

func (s *scope) event(eventType, reason, action, format string, args ...any) {
	if s.r.Recorder != nil {
		s.r.Recorder.Eventf(s.m, nil, eventType, reason, action, format, args...)
	}
}

// poll asks to look again after the controller's poll interval.
func (s *scope) poll() reconcile.Result { return reconcile.Result{RequeueAfter: s.r.Options.Poll} }

// pollHandoff is poll for the waits of the cutover itself.
func (s *scope) pollHandoff() reconcile.Result {
	return reconcile.Result{RequeueAfter: s.r.Options.HandoffPoll}
}

// pollOp is poll for the node operations a migration waits on (dump,
// transfer, staging). A held source is frozen, serving nothing, from its
// dump until the target runs, so each look that comes late is downtime;
// and most operations of a small checkpoint end within a second, where
// Poll would add up to its whole interval to each of them. Later looks at
// a long operation come at Poll, as its progress is written each time.
func (s *scope) pollOp() reconcile.Result {
	if s.m.Status.Plan.HoldSource || s.now.Sub(migration.PhaseStart(&s.m.Status)) < fastOpWindow {
		return s.pollHandoff()
	}
	return s.poll()
}

// fastOpWindow is how long into a phase its node operations are looked at
// at the handoff pace.
const fastOpWindow = 2 * time.Second

// next asks to continue at once with the phase just entered.
func next() reconcile.Result { return reconcile.Result{RequeueAfter: time.Millisecond} }

// clampRequeue makes sure a waiting migration wakes up in time to notice
// its own timeout (past the point of no return, the end of its grace: see
// checkDeadlines).
func (s *scope) clampRequeue(res reconcile.Result) reconcile.Result {
	if s.m.Status.Phase.IsFinal() {
		return res
	}
	now := s.now
	if migration.PastPointOfNoReturn(&s.m.Status) {
		now = now.Add(-s.r.Options.FailForwardAfter)
	}
	d := migration.NextDeadline(&s.m.Spec, &s.m.Status, now) + 10*time.Millisecond
	if res.RequeueAfter == 0 || res.RequeueAfter > d {
		res.RequeueAfter = d
	}
	return res
}

// brokerSession opens this migration's broker session.
func (s *scope) brokerSession(ctx context.Context) (broker.Handoff, error) {
	if s.handoff != nil {
		return s.handoff, nil
	}
	if h := s.r.brokers.get(s.m.UID); h != nil {
		s.handoff = h
		return h, nil
	}
	stream, err := s.r.resolveStream(ctx, s.m)
	if err != nil {
		return nil, err
	}
	h, err := s.r.DialBroker(ctx, stream, s.id)
	if err != nil {
		return nil, err
	}
	s.handoff = h
	return h, nil
}

// brokerRecord is where the broker session notes what it changed.
func (s *scope) brokerRecord() *v1alpha1.BrokerStatus {
	if s.m.Status.Broker == nil {
		s.m.Status.Broker = &v1alpha1.BrokerStatus{}
	}
	return s.m.Status.Broker
}

func (s *scope) hasBroker() bool { return s.m.Spec.MessageQueueConfig != nil }

// sourceHasSDK: the source consumes its namespaced control queue (the ms2m
// SDK), as recorded in Pending (see noteSourceControlQueue).
func (s *scope) sourceHasSDK() bool {
	st := &s.m.Status
	return st.Broker != nil && st.Broker.SourceControlQueue == control.PodQueueName(s.m.Namespace, s.m.Spec.SourcePod)
}
