package demo

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithAPIServer(m, func(_ *envtest.Environment, cfg *rest.Config) (err error) {
		k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		return err
	}))
}

// A run's leftovers on a real API server: the namespace is kept, what the
// last run created goes, and a migration whose finalizer is still held is
// waited for (the next run creates one of the same name).
func TestClearNamespace(t *testing.T) {
	testenv.NeedsServices(t)
	ctx := context.Background()
	const ns = "ms2m-clear"
	if err := clearNamespace(ctx, k8s, ns); err != nil {
		t.Fatalf("a namespace that does not exist yet: %v", err)
	}
	w := Workload{Kind: KindDeployment, Namespace: ns, Name: "consumer", Image: "consumer:test", Node: "node-a"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: w.labels()}, Spec: w.podSpec()}
	sel := &metav1.LabelSelector{MatchLabels: w.labels()}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: w.labels()}
	}
	held := &v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "demo-consumer", Namespace: ns, Finalizers: []string{"test.ms2m.io/hold"}},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "consumer-0"}}
	// Pods are left unscheduled: with no kubelet here, a scheduled pod
	// would never finish its graceful deletion.
	pod := &corev1.Pod{ObjectMeta: meta("consumer-0"), Spec: w.podSpec()}
	pod.Spec.NodeSelector = nil
	objs := []client.Object{
		held,
		&corev1.Service{ObjectMeta: meta("consumer"), Spec: corev1.ServiceSpec{Selector: w.labels(),
			Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}}},
		&appsv1.Deployment{ObjectMeta: meta("consumer"), Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: sel, Template: tmpl}},
		&appsv1.ReplicaSet{ObjectMeta: meta("consumer-5d8f"), Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](1), Selector: sel, Template: tmpl}},
		&appsv1.StatefulSet{ObjectMeta: meta("consumer"), Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Selector: sel, Template: tmpl}},
		pod,
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}

	done := make(chan error, 1)
	go func() { done <- clearNamespace(ctx, k8s, ns) }()
	select {
	case err := <-done:
		t.Fatalf("cleared (%v) while the last run's migration was still there", err)
	case <-time.After(time.Second):
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(held), held); err != nil || held.DeletionTimestamp == nil {
		t.Fatalf("the migration was not deleted (%v)", err)
	}
	held.Finalizers = nil
	if err := k8s.Update(ctx, held); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	got := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, got); err != nil || got.DeletionTimestamp != nil {
		t.Fatalf("the namespace itself must stay (err %v, deleting %v)", err, got.DeletionTimestamp)
	}
	for _, l := range []client.ObjectList{&v1alpha1.StatefulMigrationList{}, &corev1.ServiceList{}, &appsv1.DeploymentList{},
		&appsv1.ReplicaSetList{}, &appsv1.StatefulSetList{}, &corev1.PodList{}} {
		if err := k8s.List(ctx, l, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if n := apimeta.LenList(l); n > 0 {
			t.Errorf("%T: %d left", l, n)
		}
	}
	// The next run's objects, same names, go in.
	if err := k8s.Create(ctx, &corev1.Pod{ObjectMeta: meta("consumer-0"), Spec: pod.Spec}); err != nil {
		t.Fatalf("the next run's pod: %v", err)
	}
}

// A pod migrated again and again grows a suffix per migration; the name
// of the migration that moves it stays a valid one.
func TestMigrationNameStaysValid(t *testing.T) {
	src := "consumer-7b987f94f-75jnc"
	seen := map[string]bool{}
	for range 8 {
		src = migration.TargetPodName(src, v1alpha1.StrategyShadowPod)
		name := migrationName(src)
		if len(name) > 63 || !strings.HasPrefix(name, "demo-") || seen[name] {
			t.Fatalf("migration name %q (%d characters) for source %q", name, len(name), src)
		}
		seen[name] = true
	}
}

// A source moved again after a rolled-back migration gets a name of its
// own, still a valid one.
func TestAttemptNameStaysValid(t *testing.T) {
	long := migrationName(strings.Repeat("consumer-shadow-", 6))
	for _, name := range []string{migrationName("consumer-0"), long} {
		seen := map[string]bool{name: true}
		for attempt := 2; attempt <= maxAttempts; attempt++ {
			n := attemptName(name, attempt)
			if len(n) > 63 || seen[n] || !strings.HasPrefix(n, "demo-") {
				t.Fatalf("attempt %d of %q is named %q (%d characters)", attempt, name, n, len(n))
			}
			seen[n] = true
		}
	}
}
