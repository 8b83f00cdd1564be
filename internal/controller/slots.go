package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/policy"
)

// +kubebuilder:rbac:groups=migration.ms2m.io,resources=migrationpolicies,verbs=list
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// memoryOf is a container's memory limit, or its request without one.
func memoryOf(pod *corev1.Pod, container string) int64 {
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			continue
		}
		for _, q := range []resource.Quantity{c.Resources.Limits[corev1.ResourceMemory], c.Resources.Requests[corev1.ResourceMemory]} {
			if v := q.Value(); v > 0 {
				return v
			}
		}
	}
	return 0
}

// queuedRecheck is how often a migration that waits for a slot looks again
// without an event (a MigrationPolicy changed, an event missed): a running
// migration that ends wakes the waiting ones at once (wakeQueued).
const queuedRecheck = 5 * time.Second

// admit lets a migration start under its policy's parallelism limits, or
// records why it waits (Queued). admitted is false while it waits; res
// then says when to look again.
func (r *Reconciler) admit(ctx context.Context, s *scope, pol *v1alpha1.MigrationPolicy, source, target string) (res reconcile.Result, admitted bool, err error) {
	if pol == nil || pol.Spec.Limits == nil || isSwap(s.m) {
		// An identity swap's second leg belongs to a migration already
		// running: holding it for a slot could wait for itself.
		return reconcile.Result{}, true, nil
	}
	ok, why, err := r.slots.take(ctx, r.Client, s.m, pol, source, target, s.now)
	if err != nil {
		return reconcile.Result{}, false, err
	}
	if !ok {
		if !s.isDone(v1alpha1.ConditionQueued) {
			s.event(corev1.EventTypeNormal, v1alpha1.ConditionQueued, "Admit", "%s", why)
		}
		s.condition(v1alpha1.ConditionQueued, metav1.ConditionTrue, v1alpha1.ReasonParallelismLimit, why)
		return reconcile.Result{RequeueAfter: queuedRecheck}, false, nil
	}
	if s.isDone(v1alpha1.ConditionQueued) {
		s.condition(v1alpha1.ConditionQueued, metav1.ConditionFalse, v1alpha1.ReasonAdmitted,
			fmt.Sprintf("a slot under MigrationPolicy %s's limits came free", pol.Name))
	}
	return reconcile.Result{}, true, nil
}

// slots counts the running migrations for admission. The manager's cache
// lags its own status writes, and up to MaxConcurrentReconciles migrations
// are admitted at once: a migration admitted here counts from its
// admission until the cache shows it out of Pending (from then on the
// cache counts it), so two reconciles never both take the last slot.
type slots struct {
	mu       sync.Mutex
	admitted map[types.UID]admission
}

type admission struct {
	run policy.Running
	at  time.Time
}

// admittedPatience: an admission the cache never shows running (the
// migration was deleted before its status was written) stops counting
// after this.
const admittedPatience = time.Minute

func (sl *slots) take(ctx context.Context, c client.Reader, m *v1alpha1.StatefulMigration, pol *v1alpha1.MigrationPolicy, source, target string, now time.Time) (bool, string, error) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	var list v1alpha1.StatefulMigrationList
	if err := c.List(ctx, &list); err != nil {
		return false, "", fmt.Errorf("listing migrations to count the running ones: %w", err)
	}
	if sl.admitted == nil {
		sl.admitted = map[types.UID]admission{}
	}
	cached := map[types.UID]v1alpha1.Phase{}
	var running []policy.Running
	for _, o := range list.Items {
		cached[o.UID] = o.Status.Phase
		if o.UID != m.UID && holdsSlot(o.Status.Phase) {
			running = append(running, policy.Running{Name: o.Namespace + "/" + o.Name, SourceNode: o.Status.SourceNode, TargetNode: o.Status.TargetNode})
		}
	}
	for uid, a := range sl.admitted {
		phase, known := cached[uid]
		switch {
		case known && phase != "" && phase != v1alpha1.PhasePending,
			!known && now.Sub(a.at) > admittedPatience:
			delete(sl.admitted, uid) // the cache counts it now, or it is gone
		case uid != m.UID:
			running = append(running, a.run)
		}
	}
	ok, why := policy.Admit(pol.Spec.Limits, pol.Name, running, source, target)
	if ok {
		sl.admitted[m.UID] = admission{run: policy.Running{Name: m.Namespace + "/" + m.Name, SourceNode: source, TargetNode: target}, at: now}
	}
	return ok, why, nil
}

// holdsSlot: a migration in this phase runs (a failed one rolling back
// still does, until it is Failed).
func holdsSlot(p v1alpha1.Phase) bool {
	return p != "" && p != v1alpha1.PhasePending && !p.IsFinal()
}

// wakeQueued: a migration that ended (or went) frees a slot, so the
// migrations waiting for one look again at once.
func (r *Reconciler) wakeQueued(ctx context.Context, o client.Object) []reconcile.Request {
	m, ok := o.(*v1alpha1.StatefulMigration)
	if !ok || (!m.Status.Phase.IsFinal() && m.DeletionTimestamp.IsZero()) {
		return nil
	}
	var list v1alpha1.StatefulMigrationList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, q := range list.Items {
		if q.Status.Phase == v1alpha1.PhasePending && migration.IsTrue(&q.Status, v1alpha1.ConditionQueued) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&q)})
		}
	}
	return reqs
}
