// Package evacuation makes an eviction migrate a pod that opted in: the
// eviction (kubectl drain, the cluster autoscaler) is refused with 429 Too
// Many Requests while ms2m moves the pod off its node, as KubeVirt does for
// its live-migratable VMs; the eviction API's clients retry a 429, and once
// the pod has moved (its migration deletes it) their eviction is done.
package evacuation

import (
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

// Decision is the answer to one eviction.
type Decision struct {
	// Allow: the eviction goes on as usual.
	Allow bool
	// Migrate: start a migration of the pod (and refuse the eviction).
	Migrate bool
	// Code is the HTTP status of a refusal (429: try again).
	Code int32
	// Message says why, to whoever evicts.
	Message string
	// Event, when set, is a Warning for the pod (an eviction that falls
	// back to evicting without a migration).
	Event string
}

// StrategyOf is the pod's eviction strategy: its own label, else its
// policy's, else None. An unknown label value is no opt-in.
func StrategyOf(pod *corev1.Pod, pol *v1alpha1.MigrationPolicy) v1alpha1.EvictionStrategy {
	switch s := v1alpha1.EvictionStrategy(pod.Labels[v1alpha1.LabelOnEviction]); s {
	case v1alpha1.EvictionMigrate, v1alpha1.EvictionMigrateOrEvict, v1alpha1.EvictionNone:
		return s
	}
	if pol != nil && pol.Spec.EvictionStrategy != "" {
		return pol.Spec.EvictionStrategy
	}
	return v1alpha1.EvictionNone
}

// movedPatience is how long after an eviction's migration gave a pod's name
// to a pod on another node an eviction of that name counts as the
// drain's retry for the pod that left (see Decide).
const movedPatience = 10 * time.Minute

// Decide answers an eviction of pod (on node) under strategy, given the
// migrations of the pod's namespace.
func Decide(pod *corev1.Pod, node *corev1.Node, strategy v1alpha1.EvictionStrategy, migrations []v1alpha1.StatefulMigration, now time.Time) Decision {
	if strategy != v1alpha1.EvictionMigrate && strategy != v1alpha1.EvictionMigrateOrEvict {
		return Decision{Allow: true}
	}
	if m := movedHere(pod, node, migrations, now); m != nil {
		// kubectl drain evicts by name and retries by name: once a
		// Sequential migration has given the name to a pod on another
		// node, its next retry would evict (and migrate) that one. The
		// pod it meant is gone, and it is told so.
		return Decision{Code: http.StatusNotFound, Message: fmt.Sprintf(
			"pod %s/%s that was on node %s has moved to node %s (StatefulMigration %s): nothing of it is left to evict there",
			pod.Namespace, pod.Name, m.Labels[LabelEvictedFrom], m.Status.TargetNode, m.Name)}
	}
	if m := sameNameMove(pod.Name, migrations); m != nil && !pod.DeletionTimestamp.IsZero() {
		// A Sequential migration is stopping the source to give its name
		// to the target: allowed now, the eviction would take whichever
		// pod has the name when the API server gets to it, the target.
		return retry(sameNameMessage(pod.Namespace, pod.Name, m))
	}
	if !pod.DeletionTimestamp.IsZero() || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return Decision{Allow: true} // nothing left to move
	}
	ref := pod.Namespace + "/" + pod.Name
	var failed *v1alpha1.StatefulMigration
	for i := range migrations {
		m := &migrations[i]
		if m.Name == pod.Labels[render.LabelMigration] && !m.Status.Phase.IsFinal() {
			// The pod is a running migration's target: moving it now
			// would migrate a half-made copy; that migration ends first.
			return retry(fmt.Sprintf("pod %s is the target of StatefulMigration %s, still running: the eviction is answered once it has ended", ref, m.Name))
		}
		if m.Spec.SourcePod != pod.Name || (m.Status.SourceUID != "" && m.Status.SourceUID != pod.UID) {
			continue
		}
		switch m.Status.Phase {
		case v1alpha1.PhaseCompleted:
			return retry(fmt.Sprintf("ms2m has migrated pod %s to %s (StatefulMigration %s) and is stopping it", ref, m.Status.TargetNode, m.Name))
		case v1alpha1.PhaseFailed:
			if m.Labels[LabelEvictedFrom] != "" {
				failed = m
			}
		default:
			phase := m.Status.Phase
			if phase == "" {
				phase = v1alpha1.PhasePending
			}
			return retry(fmt.Sprintf("ms2m is migrating pod %s off node %s (StatefulMigration %s, %s): the eviction succeeds once it has moved",
				ref, pod.Spec.NodeName, m.Name, phase))
		}
	}
	if failed != nil {
		why := fmt.Sprintf("the migration of pod %s off node %s failed (StatefulMigration %s, %s: %s)",
			ref, pod.Spec.NodeName, failed.Name, failed.Status.FailureReason, failed.Status.FailureMessage)
		if strategy == v1alpha1.EvictionMigrateOrEvict {
			return Decision{Allow: true, Event: why + "; evicted without migrating, as its eviction strategy MigrateOrEvict allows"}
		}
		return retry(why + "; it stays (eviction strategy Migrate): delete StatefulMigration " + failed.Name +
			" to have the next eviction try again, or delete the pod to evict it without migrating")
	}
	return Decision{Migrate: true, Code: http.StatusTooManyRequests,
		Message: fmt.Sprintf("ms2m starts migrating pod %s off node %s (eviction strategy %s): the eviction succeeds once it has moved", ref, pod.Spec.NodeName, strategy)}
}

// sameNameMove is a running migration (of the pod's namespace) that moves
// the pod named name to another pod of the same name (Sequential), if any.
func sameNameMove(name string, migrations []v1alpha1.StatefulMigration) *v1alpha1.StatefulMigration {
	for i := range migrations {
		m := &migrations[i]
		if m.Spec.SourcePod == name && m.Status.TargetPod == name && !m.Status.Phase.IsFinal() {
			return m
		}
	}
	return nil
}

func sameNameMessage(namespace, name string, m *v1alpha1.StatefulMigration) string {
	return fmt.Sprintf("ms2m is moving pod %s/%s to node %s under the same name (StatefulMigration %s, %s): the eviction is answered once it has ended",
		namespace, name, m.Status.TargetNode, m.Name, m.Status.Phase)
}

// BetweenPods answers the eviction of a name no pod has: if a Sequential
// migration is between stopping the source and creating the target of
// that name, allowing it would evict the target once it exists.
func BetweenPods(namespace, name string, migrations []v1alpha1.StatefulMigration) (Decision, bool) {
	if m := sameNameMove(name, migrations); m != nil {
		return retry(sameNameMessage(namespace, name, m)), true
	}
	return Decision{}, false
}

// movedHere is the eviction's migration that recently gave pod its name
// on a node that nothing is draining (schedulable, untainted), if any.
func movedHere(pod *corev1.Pod, node *corev1.Node, migrations []v1alpha1.StatefulMigration, now time.Time) *v1alpha1.StatefulMigration {
	if node == nil || node.Spec.Unschedulable {
		return nil
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			return nil
		}
	}
	for i := range migrations {
		m := &migrations[i]
		from := m.Labels[LabelEvictedFrom]
		if from != "" && from != pod.Spec.NodeName && m.Status.Phase == v1alpha1.PhaseCompleted &&
			m.Status.TargetPod == pod.Name && m.Status.TargetNode == pod.Spec.NodeName &&
			m.Status.CompletionTime != nil && now.Sub(m.Status.CompletionTime.Time) < movedPatience {
			return m
		}
	}
	return nil
}

func retry(msg string) Decision {
	return Decision{Code: http.StatusTooManyRequests, Message: msg}
}

// LabelEvictedFrom marks a migration an eviction started, with the node
// the pod was evicted from.
const LabelEvictedFrom = "migration.ms2m.io/evicted-from"
