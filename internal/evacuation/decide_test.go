package evacuation

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/render"
)

func TestDecide(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-0", Namespace: "shop", UID: "uid-1"}, Spec: corev1.PodSpec{NodeName: "node-a"}}
	mig := func(phase v1alpha1.Phase, uid string, evicted bool) v1alpha1.StatefulMigration {
		m := v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "m"}, Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "c-0"}}
		m.Status.Phase, m.Status.SourceUID, m.Status.TargetNode = phase, "uid-1", "node-b"
		m.Status.FailureReason, m.Status.FailureMessage = "RestoreFailed", "criu said no"
		if uid != "" {
			m.Status.SourceUID = k8stypes.UID(uid)
		}
		if evicted {
			m.Labels = map[string]string{LabelEvictedFrom: "node-a"}
		}
		return m
	}
	cases := []struct {
		name       string
		strategy   v1alpha1.EvictionStrategy
		migrations []v1alpha1.StatefulMigration
		allow      bool
		migrate    bool
		says       string
	}{
		{"not opted in", v1alpha1.EvictionNone, nil, true, false, ""},
		{"opted in, nothing running: migrate", v1alpha1.EvictionMigrate, nil, false, true, "ms2m starts migrating pod shop/c-0 off node node-a"},
		{"a migration runs", v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseTransferring, "", false)}, false, false, "is migrating pod shop/c-0 off node node-a (StatefulMigration m, Transferring)"},
		{"migrated, being stopped", v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseCompleted, "", false)}, false, false, "has migrated pod shop/c-0 to node-b"},
		{"a migration of the pod's predecessor does not count", v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseCompleted, "uid-0", false)}, false, true, "starts migrating"},
		{"its eviction's migration failed: it stays", v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseFailed, "", true)}, false, false, "RestoreFailed: criu said no); it stays"},
		{"its eviction's migration failed: evicted", v1alpha1.EvictionMigrateOrEvict, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseFailed, "", true)}, true, false, ""},
		{"a failed migration someone else started does not stop a new one", v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseFailed, "", false)}, false, true, "starts migrating"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(pod, nil, c.strategy, c.migrations, time.Now())
			if d.Allow != c.allow || d.Migrate != c.migrate || !strings.Contains(d.Message, c.says) {
				t.Fatalf("%+v; want allow %v migrate %v saying %q", d, c.allow, c.migrate, c.says)
			}
			if !d.Allow && d.Code != 429 {
				t.Fatalf("a refusal must be 429 (drain retries it): %d", d.Code)
			}
		})
	}
	target := pod.DeepCopy()
	target.Labels = map[string]string{render.LabelMigration: "m"}
	running := mig(v1alpha1.PhaseRestoring, "uid-9", false)
	running.Spec.SourcePod = "c-other"
	if d := Decide(target, nil, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{running}, time.Now()); d.Allow || d.Migrate || !strings.Contains(d.Message, "is the target of StatefulMigration m, still running") {
		t.Fatalf("a running migration's target: %+v", d)
	}
	running.Status.Phase = v1alpha1.PhaseCompleted
	if d := Decide(target, nil, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{running}, time.Now()); !d.Migrate {
		t.Fatalf("a completed migration's target migrates like any pod: %+v", d)
	}
	if d := Decide(pod, nil, v1alpha1.EvictionMigrateOrEvict, []v1alpha1.StatefulMigration{mig(v1alpha1.PhaseFailed, "", true)}, time.Now()); !strings.Contains(d.Event, "evicted without migrating") {
		t.Fatalf("a fallback eviction must say why: %+v", d)
	}
}

func TestStrategyOf(t *testing.T) {
	pol := &v1alpha1.MigrationPolicy{Spec: v1alpha1.MigrationPolicySpec{EvictionStrategy: v1alpha1.EvictionMigrateOrEvict}}
	pod := &corev1.Pod{}
	if s := StrategyOf(pod, nil); s != v1alpha1.EvictionNone {
		t.Fatal(s)
	}
	if s := StrategyOf(pod, pol); s != v1alpha1.EvictionMigrateOrEvict {
		t.Fatal(s)
	}
	pod.Labels = map[string]string{v1alpha1.LabelOnEviction: "None"}
	if s := StrategyOf(pod, pol); s != v1alpha1.EvictionNone {
		t.Fatalf("the pod's label must win: %s", s)
	}
	pod.Labels[v1alpha1.LabelOnEviction] = "Sometimes"
	if s := StrategyOf(pod, pol); s != v1alpha1.EvictionMigrateOrEvict {
		t.Fatalf("an unknown label value falls back to the policy: %s", s)
	}
}

func TestMigrationName(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("x", 70), UID: "0123456789abcdef"}}
	if n := MigrationName(pod); len(n) > 63 || !strings.HasSuffix(n, "-01234567") {
		t.Fatalf("%q (%d)", n, len(n))
	}
}

// kubectl drain retries an eviction by name: once a Sequential migration
// has given the name to a pod on another node, the retry is told the pod
// it meant is gone, unless that node is being drained itself.
func TestDecideAfterTheNameMoved(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	moved := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-0", Namespace: "shop", UID: "uid-2"}, Spec: corev1.PodSpec{NodeName: "node-b"}}
	done := metav1.NewTime(now.Add(-time.Minute))
	m := v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "evict-c-0-uid1", Labels: map[string]string{LabelEvictedFrom: "node-a"}},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "c-0"}}
	m.Status.Phase, m.Status.SourceUID, m.Status.TargetPod, m.Status.TargetNode, m.Status.CompletionTime = v1alpha1.PhaseCompleted, "uid-1", "c-0", "node-b", &done
	open := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}
	d := Decide(moved, open, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{m}, now)
	if d.Allow || d.Migrate || d.Code != 404 || !strings.Contains(d.Message, "that was on node node-a has moved to node node-b") {
		t.Fatalf("the drain's retry: %+v", d)
	}
	cordoned := open.DeepCopy()
	cordoned.Spec.Unschedulable = true
	if d := Decide(moved, cordoned, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{m}, now); !d.Migrate {
		t.Fatalf("a drain of node-b itself migrates the pod again: %+v", d)
	}
	if d := Decide(moved, open, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{m}, now.Add(time.Hour)); !d.Migrate {
		t.Fatalf("long after, an eviction is a new one: %+v", d)
	}
}

// Between the stop of a Sequential source and the creation of its target
// of the same name, an eviction by that name would take the target: it is
// refused while the migration runs, whether the source is terminating or
// already gone, and answered as usual once the migration has ended.
func TestEvictionBetweenTheTwoPodsOfASequentialMove(t *testing.T) {
	m := v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "evict-c-0"}, Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "c-0"}}
	m.Status.Phase, m.Status.TargetPod, m.Status.TargetNode, m.Status.SourceUID = v1alpha1.PhaseRestoring, "c-0", "node-b", "uid-1"
	now := metav1.Now()
	stopping := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-0", Namespace: "shop", UID: "uid-1", DeletionTimestamp: &now},
		Spec: corev1.PodSpec{NodeName: "node-a"}}
	d := Decide(stopping, nil, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{m}, time.Now())
	if d.Allow || d.Code != 429 || !strings.Contains(d.Message, "moving pod shop/c-0 to node node-b under the same name (StatefulMigration evict-c-0, Restoring)") {
		t.Errorf("the stopping source: %+v", d)
	}
	if d, between := BetweenPods("shop", "c-0", []v1alpha1.StatefulMigration{m}); !between || d.Code != 429 {
		t.Errorf("no pod of the name yet: %+v, %v", d, between)
	}
	shadow := m
	shadow.Status.TargetPod = "c-0-shadow"
	if _, between := BetweenPods("shop", "c-0", []v1alpha1.StatefulMigration{shadow}); between {
		t.Error("a ShadowPod target has a name of its own: nothing to wait for")
	}
	done := m
	done.Status.Phase = v1alpha1.PhaseCompleted
	if _, between := BetweenPods("shop", "c-0", []v1alpha1.StatefulMigration{done}); between {
		t.Error("after the migration, the name is the target's: answered as usual")
	}
	if d := Decide(stopping, nil, v1alpha1.EvictionMigrate, []v1alpha1.StatefulMigration{done}, time.Now()); !d.Allow {
		t.Errorf("a terminating pod with nothing running: %+v", d)
	}
}
