package migration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// ResolveStrategy picks ShadowPod or Sequential. An explicit spec wins. Auto
// follows the owner: a StatefulSet pod's name is its identity, so by default
// it moves Sequentially unless an identity swap is requested (which needs a
// shadow beside the source); everything else moves as a ShadowPod, with zero
// downtime.
func ResolveStrategy(spec *v1alpha1.StatefulMigrationSpec, ownerKind string) (v1alpha1.MigrationStrategy, string) {
	if !spec.IsAutoStrategy() {
		return spec.MigrationStrategy, "set in spec.migrationStrategy"
	}
	if ownerKind == "StatefulSet" {
		if spec.EffectiveIdentitySwapMode() != v1alpha1.IdentitySwapNone {
			return v1alpha1.StrategyShadowPod, "StatefulSet pod with identitySwapMode " + string(spec.IdentitySwapMode) + ": shadow pod, then identity swap"
		}
		return v1alpha1.StrategySequential, "StatefulSet pod: its name is its identity, so the source stops before the target takes the name"
	}
	if ownerKind == "" || ownerKind == "Pod" {
		return v1alpha1.StrategyShadowPod, "bare pod: the target runs beside the source until cutover"
	}
	return v1alpha1.StrategyShadowPod, ownerKind + " pod: the target runs beside the source until cutover"
}

// MigrationID names what a migration creates outside the API (broker queues,
// node operations): unique per object, stable across controller restarts.
func MigrationID(name, uid string) string {
	u := uid
	if len(u) > 8 {
		u = u[:8]
	}
	return fmt.Sprintf("%s-%s", name, u)
}

// TargetPodName is the restored pod's name. Sequential keeps the source's
// name (the StatefulSet identity); ShadowPod adds a suffix, shortened with a
// hash when the result would exceed a pod name's 63 characters.
func TargetPodName(source string, strategy v1alpha1.MigrationStrategy) string {
	if strategy == v1alpha1.StrategySequential {
		return source
	}
	const suffix = "-shadow"
	name := source + suffix
	if len(name) <= 63 {
		return name
	}
	h := sha256.Sum256([]byte(source))
	short := hex.EncodeToString(h[:])[:8]
	return source[:63-len(suffix)-len(short)-1] + "-" + short + suffix
}

// Overrun reports whether the current phase or the whole migration has run
// out of time, and a message saying which.
func Overrun(spec *v1alpha1.StatefulMigrationSpec, st *v1alpha1.StatefulMigrationStatus, now time.Time) (bool, string) {
	spec = budgets(spec, st)
	if st.StartTime != nil {
		if total := spec.TotalTimeout(); now.Sub(st.StartTime.Time) > total {
			return true, fmt.Sprintf("the migration did not finish within timeouts.total (%s)", total)
		}
	}
	budget := spec.PhaseTimeout(st.Phase)
	start := PhaseStart(st)
	if budget > 0 && !start.IsZero() && now.Sub(start) > budget {
		return true, fmt.Sprintf("phase %s did not finish within its timeout of %s", st.Phase, budget)
	}
	return false, ""
}

// NextDeadline is how long until Overrun could first become true, so a
// waiting handler can requeue no later than that.
func NextDeadline(spec *v1alpha1.StatefulMigrationSpec, st *v1alpha1.StatefulMigrationStatus, now time.Time) time.Duration {
	spec = budgets(spec, st)
	next := time.Duration(0)
	consider := func(d time.Duration) {
		if d < 0 {
			d = 0
		}
		if next == 0 || d < next {
			next = d
		}
	}
	if st.StartTime != nil {
		consider(spec.TotalTimeout() - now.Sub(st.StartTime.Time))
	}
	if budget, start := spec.PhaseTimeout(st.Phase), PhaseStart(st); budget > 0 && !start.IsZero() {
		consider(budget - now.Sub(start))
	}
	return next
}

// budgets is spec with the timeouts its plan resolved, once it has one: a
// policy or an upgrade that changes a default since does not change them.
func budgets(spec *v1alpha1.StatefulMigrationSpec, st *v1alpha1.StatefulMigrationStatus) *v1alpha1.StatefulMigrationSpec {
	if st.Plan.Timeouts == nil {
		return spec
	}
	with := *spec
	with.Timeouts = st.Plan.Timeouts
	return &with
}

// PastPointOfNoReturn reports whether the source's stop has been issued
// (ShadowPod: at cutover; Sequential: just before the target takes its
// name): from then on nothing brings the source back, and rolling back
// would throw away what the target applied since, so an abort is rejected,
// timeouts no longer fail the migration, and it rolls forward.
func PastPointOfNoReturn(st *v1alpha1.StatefulMigrationStatus) bool {
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionSourceStopped)
	return c != nil && (c.Status == metav1.ConditionTrue || c.Reason == v1alpha1.ReasonSourceStopping)
}

// CheckWorkload says whether a pod of this owner can move with this
// strategy, and if not, what to do instead.
//   - Pods without a controller move either way.
//   - Deployment (ReplicaSet) pods move as ShadowPods: the ReplicaSet adopts
//     the target as the source goes. A Sequential move gains nothing there
//     (the name changes anyway) and is refused.
//   - StatefulSet pods move Sequentially (the target takes the source's
//     name) or as a ShadowPod followed by an identity swap into that name;
//     either way the StatefulSet is scaled down by one meanwhile, so only
//     its highest ordinal can move.
func CheckWorkload(kind string, strategy v1alpha1.MigrationStrategy, swap v1alpha1.IdentitySwapMode, ordinal, replicas int) (bool, string) {
	switch kind {
	case "Pod":
		return true, ""
	case "ReplicaSet", "Deployment":
		if strategy == v1alpha1.StrategySequential {
			return false, kind + " pods move as ShadowPods (the ReplicaSet adopts the target); use migrationStrategy ShadowPod or leave it empty"
		}
		return true, ""
	case "StatefulSet":
		if strategy == v1alpha1.StrategyShadowPod && (swap == v1alpha1.IdentitySwapNone || swap == "") {
			return false, "a StatefulSet pod moved as a ShadowPod would lose its StatefulSet identity; set identitySwapMode or use migrationStrategy Sequential"
		}
		if ordinal != replicas-1 {
			return false, fmt.Sprintf("only the highest ordinal (%d) of a StatefulSet can move: the StatefulSet is scaled down by one while its pod moves; this pod has ordinal %d", replicas-1, ordinal)
		}
		return true, ""
	}
	return false, "pods owned by a " + kind + " cannot be migrated: its controller would replace or fight the target"
}
