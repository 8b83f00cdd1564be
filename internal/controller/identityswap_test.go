package controller_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// A StatefulSet pod moved as a ShadowPod: the shadow takes the stream on
// node-b beside the source, then the identity swap (a second migration,
// visible as its own StatefulMigration) moves it into the StatefulSet's pod
// name on the same node. Across both handoffs every message is applied
// exactly once, and the StatefulSet ends owning its pod with its replicas
// as before.
func TestShadowPodStatefulSetIdentitySwap(t *testing.T) {
	w := newWorld(t)
	before := w.topology()
	sts := w.statefulSet("consumer", 1)
	src := w.sourcePodOf("consumer-0", sts)
	w.produce(100)
	time.Sleep(time.Second)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.IdentitySwapMode = v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapExchangeFence
	})
	m := w.waitPhase(name, 2*migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("migration failed: %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
	}
	if m.Status.TargetPod != "consumer-0" || m.Status.Plan.Strategy != v1alpha1.StrategyShadowPod {
		t.Errorf("parent ends with target %q (%s), want consumer-0 (ShadowPod)", m.Status.TargetPod, m.Status.Plan.Strategy)
	}
	swap := w.get(name + "-swap")
	if swap.Status.Phase != v1alpha1.PhaseCompleted || swap.Spec.SourcePod != "consumer-0-shadow" || swap.Status.TargetNode != "node-b" {
		t.Errorf("identity swap %s: phase %s, source %s, node %s", swap.Name, swap.Status.Phase, swap.Spec.SourcePod, swap.Status.TargetNode)
	}
	if owner := metav1.GetControllerOf(swap); owner == nil || owner.UID != m.UID {
		t.Errorf("identity swap not owned by its parent: %+v", swap.OwnerReferences)
	}

	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0"}, target); err != nil {
		t.Fatal(err)
	}
	if target.UID == src.UID || target.Spec.NodeName != "node-b" {
		t.Fatalf("consumer-0 is not the restored pod on node-b (uid %s, node %s)", target.UID, target.Spec.NodeName)
	}
	if owner := metav1.GetControllerOf(target); owner == nil || owner.UID != sts.UID {
		t.Errorf("consumer-0 not owned by its StatefulSet: %+v", target.OwnerReferences)
	}
	if target.Labels[appsv1.StatefulSetPodNameLabel] != "consumer-0" || target.Spec.Hostname != "consumer-0" || target.Spec.Subdomain != "consumer" {
		t.Errorf("consumer-0 lacks its StatefulSet identity: labels %v, hostname %q, subdomain %q", target.Labels, target.Spec.Hostname, target.Spec.Subdomain)
	}
	got := &appsv1.StatefulSet{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(sts), got); err != nil {
		t.Fatal(err)
	}
	if r := ptr.Deref(got.Spec.Replicas, 0); r != 1 {
		t.Errorf("StatefulSet left at %d replicas, want 1", r)
	}
	sdktest.Eventually(t, 10*time.Second, "shadow pod gone", func() bool {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0-shadow"}, &corev1.Pod{})
		return apierrors.IsNotFound(err)
	})
	w.checkExactlyOnce("consumer-0")
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
}

// A StatefulSet pod may only be moved as a ShadowPod when it is swapped
// back into its identity: without identitySwapMode the migration fails
// before it touches anything, saying what to set.
func TestShadowPodStatefulSetWithoutSwapIsRefused(t *testing.T) {
	w := newWorld(t)
	before := w.topology()
	sts := w.statefulSet("consumer", 1)
	w.sourcePodOf("consumer-0", sts)
	w.produce(50)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.IdentitySwapMode = v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapNone
	})
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailedPhase != v1alpha1.PhasePending {
		t.Fatalf("phase %s (failed in %s), want Failed in Pending", m.Status.Phase, m.Status.FailedPhase)
	}
	for _, want := range []string{"identitySwapMode", "Sequential"} {
		if !strings.Contains(m.Status.FailureMessage, want) {
			t.Errorf("failure message %q does not say to set %s", m.Status.FailureMessage, want)
		}
	}
	if after := w.topology(); !slices.Equal(before, after) {
		t.Errorf("broker topology changed:\nbefore %v\nafter  %v", before, after)
	}
	w.expectSourceServing("consumer-0")
}

// statefulSet creates a StatefulSet object. envtest runs no StatefulSet
// controller: the test creates its pods (sourcePodOf) and the migration
// alone scales and hands pods back.
func (w *world) statefulSet(name string, replicas int32) *appsv1.StatefulSet {
	w.t.Helper()
	labels := map[string]string{"app": "consumer"}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(replicas), ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "consumer", Image: imageConsumer}}}}}}
	if err := k8s.Create(context.Background(), sts); err != nil {
		w.t.Fatal(err)
	}
	return sts
}

// sourcePodOf creates a running consumer pod of the StatefulSet on node-a,
// as its controller would.
func (w *world) sourcePodOf(name string, sts *appsv1.StatefulSet) *corev1.Pod {
	w.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns,
		Labels: map[string]string{"app": "consumer", appsv1.StatefulSetPodNameLabel: name, appsv1.PodIndexLabel: "0"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: "node-a", Hostname: name, Subdomain: sts.Spec.ServiceName,
			Containers: []corev1.Container{{Name: "consumer", Image: imageConsumer}}}}
	if err := k8s.Create(context.Background(), p); err != nil {
		w.t.Fatal(err)
	}
	sdktest.Eventually(w.t, 10*time.Second, "source pod running", func() bool {
		return w.sim.pod(name) != nil && w.b.Inspect(w.t, w.queue).Consumers == 1
	})
	return p
}

// An identity swap that fails (its restore fails) rolls back on its own and
// fails its parent forward: the shadow, which never stopped, serves on
// alone; the StatefulSet stays one replica down and does not recreate its
// pod beside the shadow.
func TestFailedIdentitySwapLeavesTheShadowServing(t *testing.T) {
	w := newWorld(t)
	sts := w.statefulSet("consumer", 1)
	w.sourcePodOf("consumer-0", sts)
	w.sim.mu.Lock()
	w.sim.badRestore["consumer-0"] = true
	w.sim.mu.Unlock()
	w.produce(50)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.IdentitySwapMode = v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapExchangeFence
	})
	m := w.waitPhase(name, 2*migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != v1alpha1.ReasonCutoverFailed ||
		!strings.Contains(m.Status.FailureMessage, "consumer-0-shadow keeps serving") {
		t.Fatalf("parent %s (%s: %s), want Failed saying the shadow keeps serving", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
	}
	swap := w.get(name + "-swap")
	if swap.Status.Phase != v1alpha1.PhaseFailed || swap.Status.FailureReason != v1alpha1.ReasonRestoreFailed || !meta(swap, v1alpha1.ConditionRolledBack) {
		t.Errorf("identity swap %s (%s), want Failed with RestoreFailed and rolled back", swap.Status.Phase, swap.Status.FailureReason)
	}
	got := &appsv1.StatefulSet{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(sts), got); err != nil {
		t.Fatal(err)
	}
	if r := ptr.Deref(got.Spec.Replicas, -1); r != 0 {
		t.Errorf("StatefulSet at %d replicas, want 0 (one down while the shadow serves)", r)
	}
	sdktest.Eventually(t, 10*time.Second, "the swap's target gone", func() bool {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0"}, &corev1.Pod{})
		return apierrors.IsNotFound(err)
	})
	w.expectSourceServing("consumer-0-shadow")
	if len(w.replayQueues()) != 0 {
		t.Errorf("replay queues left: %v", w.replayQueues())
	}
}

// Above the consumer's capacity a replay never drains: with a Cutoff
// replay the identity swap ends its handoff at the cutoff too, as its
// parent did, instead of waiting for a drain that never comes.
func TestIdentitySwapAboveCapacityEndsAtTheCutoff(t *testing.T) {
	w := newWorld(t)
	w.sim.delay = 20 * time.Millisecond // ~45 msg/s of capacity
	sts := w.statefulSet("consumer", 1)
	w.sourcePodOf("consumer-0", sts)
	w.produce(60)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.IdentitySwapMode = v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapExchangeFence
		s.ReplayMode, s.ReplayCutoffSeconds = v1alpha1.ReplayCutoff, 2
	})
	m := w.waitPhase(name, 2*migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("migration failed: %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
	}
	if swap := w.get(name + "-swap"); swap.Spec.ReplayMode != v1alpha1.ReplayCutoff || swap.Spec.ReplayCutoffSeconds != 2 {
		t.Errorf("identity swap replays %s with a cutoff of %d s, want its parent's Cutoff of 2 s", swap.Spec.ReplayMode, swap.Spec.ReplayCutoffSeconds)
	}
	w.checkExactlyOnce("consumer-0")
}
