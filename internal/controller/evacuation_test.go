package controller_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/evacuation"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/podstream"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// evictionWebhook serves ms2m's eviction webhook for the world's namespace
// as the manager (its ClusterRole), and registers it with the API server
// the way config/webhook does, over TLS from ms2m's CA.
func (w *world) evictionWebhook() {
	w.t.Helper()
	ca, err := identity.NewCA()
	if err != nil {
		w.t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	asManager, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		w.t.Fatal(err)
	}
	w.onManager = func(mgr ctrl.Manager) error {
		srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = ca.ServingCertificate([]string{"localhost"}) }}})
		srv.Register(evacuation.Path, &webhook.Admission{Handler: &evacuation.Webhook{Reader: asManager, Client: asManager,
			Recorder: mgr.GetEventRecorder("ms2m-evictions")}})
		return mgr.Add(srv)
	}

	url := fmt.Sprintf("https://localhost:%d%s", port, evacuation.Path)
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "ms2m-evictions-" + w.ns},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "evictions.migration.ms2m.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca.PEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods/eviction"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: w.ns}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}}}
	if err := k8s.Create(context.Background(), cfg); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = k8s.Delete(context.Background(), cfg) })
}

// evictUntilGone evicts the pod as kubectl drain does: a 429 is retried,
// until the pod is gone. It returns the refusals' messages, in order.
func (w *world) evictUntilGone(pod string, timeout time.Duration) []string {
	w.t.Helper()
	cs := kubernetes.NewForConfigOrDie(adminCfg)
	var said []string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		err := cs.CoreV1().Pods(w.ns).EvictV1(context.Background(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: w.ns}})
		switch {
		case apierrors.IsNotFound(err):
			return said
		case apierrors.IsTooManyRequests(err):
			if msg := err.Error(); len(said) == 0 || said[len(said)-1] != msg {
				said = append(said, msg)
			}
		case err == nil:
			// Evicted: the pod goes once its containers have stopped.
		default:
			w.t.Fatalf("eviction of %s: %v", pod, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.t.Fatalf("%s still there after %s of evictions; refusals: %s", pod, timeout, strings.Join(said, "\n"))
	return nil
}

// A drain evicts a pod that opted in to migrating: the eviction is refused
// (429, so the drain retries) while ms2m migrates it, and succeeds once the
// pod has moved, with every message applied once.
func TestEvictionMigratesAnOptedInPod(t *testing.T) {
	w := newWorld(t)
	src := w.sourcePod("consumer-0")
	patch := client.MergeFrom(src.DeepCopy())
	src.Labels[v1alpha1.LabelOnEviction] = string(v1alpha1.EvictionMigrate)
	src.Annotations = map[string]string{podstream.AnnotationBrokerURL: w.amqpURL, podstream.AnnotationQueue: w.queue,
		podstream.AnnotationExchange: w.exchange, podstream.AnnotationRoutingKey: "orders", podstream.AnnotationMgmtURL: w.mgmtURL}
	if err := k8s.Patch(context.Background(), src, patch); err != nil {
		t.Fatal(err)
	}
	w.produce(100)
	time.Sleep(500 * time.Millisecond)
	w.evictionWebhook()
	w.startManager()

	said := w.evictUntilGone("consumer-0", migrationTimeout)
	if len(said) < 2 || !strings.Contains(said[0], "ms2m starts migrating pod "+w.ns+"/consumer-0 off node node-a (eviction strategy Migrate)") ||
		!strings.Contains(said[1], "ms2m is migrating pod "+w.ns+"/consumer-0 off node node-a") {
		t.Fatalf("the refusals the drain saw:\n%s", strings.Join(said, "\n"))
	}
	name := evacuation.MigrationName(src)
	m := w.waitCompleted(name)
	if m.Labels[evacuation.LabelEvictedFrom] != "node-a" || m.Status.TargetNode == "node-a" || m.Status.TargetNode == "" {
		t.Fatalf("migration %s: labels %v, to %s", name, m.Labels, m.Status.TargetNode)
	}
	var list v1alpha1.StatefulMigrationList
	if err := k8s.List(context.Background(), &list, client.InNamespace(w.ns)); err != nil || len(list.Items) != 1 {
		t.Fatalf("the retried evictions started %d migrations (%v), want 1", len(list.Items), err)
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// A pod that did not opt in is evicted as usual, and nothing migrates it.
func TestEvictionOfAPodWithoutOptInEvicts(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.evictionWebhook()
	w.startManager()
	cs := kubernetes.NewForConfigOrDie(adminCfg)
	err := cs.CoreV1().Pods(w.ns).EvictV1(context.Background(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "consumer-0", Namespace: w.ns}})
	if err != nil {
		t.Fatalf("eviction refused: %v", err)
	}
	var list v1alpha1.StatefulMigrationList
	if err := k8s.List(context.Background(), &list, client.InNamespace(w.ns)); err != nil || len(list.Items) != 0 {
		t.Fatalf("%d migrations (%v) for a pod that did not opt in", len(list.Items), err)
	}
	sdktest.Eventually(t, 10*time.Second, "pod terminating", func() bool {
		p := &corev1.Pod{}
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: "consumer-0"}, p)
		return apierrors.IsNotFound(err) || !p.DeletionTimestamp.IsZero()
	})
}

// A drain's migration that takes the pod out of service for a while
// (Sequential) waits, like any eviction, for its PodDisruptionBudget to
// allow a disruption, and counts against it once it starts; the budget's
// status is what the disruption controller would report (none runs here).
func TestEvictionThatStopsThePodWaitsForItsDisruptionBudget(t *testing.T) {
	w := newWorld(t)
	w.plainPod("consumer-0")
	w.policyFor(v1alpha1.MigrationPolicySpec{EvictionStrategy: v1alpha1.EvictionMigrate,
		Defaults: &v1alpha1.MigrationDefaults{MigrationStrategy: v1alpha1.StrategySequential}})
	ctx := context.Background()
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "consumer", Namespace: w.ns},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "consumer"}}}}
	if err := k8s.Create(ctx, pdb); err != nil {
		t.Fatal(err)
	}
	setBudget := func(allowed int32) {
		t.Helper()
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pdb), pdb); err != nil {
			t.Fatal(err)
		}
		pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: allowed,
			CurrentHealthy: 1 + allowed, DesiredHealthy: 1, ExpectedPods: 1 + allowed}
		if err := k8s.Status().Update(ctx, pdb); err != nil {
			t.Fatal(err)
		}
	}
	setBudget(0)
	w.evictionWebhook()
	w.startManager()
	cs := kubernetes.NewForConfigOrDie(adminCfg)
	evict := func() error {
		return cs.CoreV1().Pods(w.ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "consumer-0", Namespace: w.ns}})
	}
	migrations := func() int {
		var list v1alpha1.StatefulMigrationList
		if err := k8s.List(ctx, &list, client.InNamespace(w.ns)); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}

	err := evict()
	if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "PodDisruptionBudget consumer allows no disruption now") {
		t.Fatalf("eviction under a budget that allows none: %v", err)
	}
	if n := migrations(); n != 0 {
		t.Fatalf("%d migrations started while the budget allowed no disruption", n)
	}

	setBudget(1)
	if err := evict(); !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "ms2m starts migrating pod "+w.ns+"/consumer-0") {
		t.Fatalf("eviction under a budget that allows one: %v", err)
	}
	if n := migrations(); n != 1 {
		t.Fatalf("%d migrations, want 1", n)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pdb), pdb); err != nil {
		t.Fatal(err)
	}
	if _, counted := pdb.Status.DisruptedPods["consumer-0"]; pdb.Status.DisruptionsAllowed != 0 || !counted {
		t.Errorf("the migration was not counted against the budget: %+v", pdb.Status)
	}
}
