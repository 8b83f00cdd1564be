package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// The cutover sets the target Ready itself rather than waiting a second or
// more for its kubelet; a kubelet that had not synced the pod may still
// write back the Ready=False it cached before the gate opened. The target
// must end Ready all the same, without that kubelet's help.
func TestTargetReadyHeldAgainstStaleKubelet(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.produce(50)
	time.Sleep(500 * time.Millisecond)
	w.sim.staleReady = true
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	m := w.waitCompleted(name)
	sdktest.Eventually(t, 10*time.Second, "the stale Ready=False written and the target Ready again", func() bool {
		target := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, target); err != nil {
			return false
		}
		w.sim.mu.Lock()
		wrote := w.sim.wroteBack[string(target.UID)]
		w.sim.mu.Unlock()
		return wrote && podIsReady(target)
	})
	w.checkExactlyOnce(m.Status.TargetPod)
}

// Make before break, observed: the source is stopped only once the target
// is a ready endpoint of the Services that select it. envtest runs no
// EndpointSlice controller, so the test writes the target's slice as that
// controller would, and only when it sees the target Ready.
func TestSourceStopsOnlyOnceTargetIsAnEndpoint(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	src := w.sourcePod("consumer-0")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "consumer", Namespace: w.ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "consumer"}, Ports: []corev1.ServicePort{{Port: 8080}}}}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	w.produce(50)
	time.Sleep(500 * time.Millisecond)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)

	var target corev1.Pod
	sdktest.Eventually(t, migrationTimeout, "target Ready", func() bool {
		m := w.get(name)
		return m.Status.TargetPod != "" &&
			k8s.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, &target) == nil && podIsReady(&target)
	})
	// Ready, but not an endpoint yet: the source must still be there and
	// serving. (It has the SDK: it may have let go of its queue already,
	// which its HTTP clients do not see.)
	time.Sleep(time.Second)
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(src), pod); err != nil || !pod.DeletionTimestamp.IsZero() {
		t.Fatalf("source gone or going before its successor was an endpoint of Service %s: %v", svc.Name, err)
	}
	if m := w.get(name); migration.IsTrue(&m.Status, v1alpha1.ConditionTargetServing) {
		t.Fatal("TargetServing before the target was an endpoint")
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "consumer-x", Namespace: w.ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: w.ns, Name: target.Name, UID: target.UID}}},
	}
	if err := k8s.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	m := w.waitCompleted(name)
	w.waitSourceRetired(name, src)
	serving := apimeta.FindStatusCondition(w.get(name).Status.Conditions, v1alpha1.ConditionTargetServing)
	if serving == nil || !strings.Contains(serving.Message, "ready endpoint of every Service") {
		t.Errorf("TargetServing: %+v", serving)
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// A source with the ms2m SDK lets go of its queue at cutover (RELEASE)
// instead of being deleted: the stream switches and the migration
// completes without waiting for the target's kubelet to confirm the Ready
// the cutover set. The source's pod serves until that confirmation, then
// goes, and OwnershipTransferred says so.
func TestReleasedSourceServesUntilTheKubeletConfirms(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	src, name, m := w.migrateWithKubeletLate(4 * time.Second)

	target := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: m.Status.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	if !readyByMS2M(target) {
		t.Errorf("the kubelet had confirmed %s Ready before the migration completed: the cutover waited for it", target.Name)
	}
	if stopped := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionSourceStopped); stopped == nil || !strings.Contains(stopped.Message, "RELEASED") {
		t.Errorf("SourceStopped %+v, want the source's RELEASED", stopped)
	}
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(src), pod); err != nil || !pod.DeletionTimestamp.IsZero() {
		t.Errorf("source pod gone or going at completion, before the kubelet confirmed its successor: %v", err)
	}
	if migration.IsTrue(&m.Status, v1alpha1.ConditionOwnershipTransferred) {
		t.Error("OwnershipTransferred before the released source went")
	}

	sdktest.Eventually(t, 20*time.Second, "the source removed once the kubelet confirmed the target", func() bool {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(src), &corev1.Pod{})
		return apierrors.IsNotFound(err) && migration.IsTrue(&w.get(name).Status, v1alpha1.ConditionOwnershipTransferred)
	})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(target), target); err != nil || readyByMS2M(target) || !podIsReady(target) {
		t.Errorf("target %s after the source went: Ready by the kubelet %v (%v)", target.Name, !readyByMS2M(target) && podIsReady(target), err)
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// A completed migration deleted while its released source still serves
// (the target's kubelet has not confirmed it yet) removes that source
// before it goes: nothing is left consuming nothing beside the target.
func TestDeletedMigrationRetiresItsReleasedSource(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	src, _, m := w.migrateWithKubeletLate(time.Minute)
	pod := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(src), pod); err != nil || !pod.DeletionTimestamp.IsZero() {
		t.Fatalf("the released source went before the kubelet confirmed its successor: %v", err)
	}
	if err := k8s.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	sdktest.Eventually(t, 20*time.Second, "the migration gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(m), &v1alpha1.StatefulMigration{}))
	})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(src), pod); err == nil && pod.DeletionTimestamp.IsZero() {
		t.Errorf("source pod %s left behind, released and serving, by the deleted migration", src.Name)
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// migrateWithKubeletLate completes a migration of consumer-0 (it has the
// SDK, so it releases its queue) on nodes whose kubelet confirms a
// target's cutover Ready lag late.
func (w *world) migrateWithKubeletLate(lag time.Duration) (*corev1.Pod, string, *v1alpha1.StatefulMigration) {
	w.t.Helper()
	w.sim.confirmLag = lag
	src := w.sourcePod("consumer-0")
	w.produce(50)
	time.Sleep(500 * time.Millisecond)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	return src, name, w.waitCompleted(name)
}
