//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/cli"
	"github.com/ms2m/ms2m/internal/demo"
	"github.com/ms2m/ms2m/internal/evacuation"
	"github.com/ms2m/ms2m/internal/podstream"
)

// Draining node-a with two consumers that opted in to migrating (a
// Deployment's and a StatefulSet's, each under its own producer) leaves
// both serving on node-b, every message applied once: the drain is
// kubectl drain's own code (`kubectl migrate drain`), the migrations are
// started by ms2m's eviction webhook, called by the lab's API server.
func TestDrainMigratesOptedInConsumers(t *testing.T) {
	drainTwo(t, "e2e-drain-", nil)
}

// The same drain under a MigrationPolicy that lets one migration at a time
// leave a node: the second waits, Queued and saying why, and starts once
// the first has ended; the drain still completes.
func TestDrainUnderAPolicyMigratesOneAtATime(t *testing.T) {
	ms, drained := drainTwo(t, "e2e-policy-", &v1alpha1.MigrationPolicySpec{
		Limits: &v1alpha1.MigrationLimits{ParallelOutboundMigrationsPerNode: ptr.To[int32](1)}})
	var queued, first *v1alpha1.StatefulMigration
	for _, m := range ms {
		if c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionQueued); c != nil {
			queued = m
			t.Logf("%s was queued: %s (%s)", m.Name, c.Reason, c.Message)
		} else {
			first = m
		}
	}
	if queued == nil || first == nil {
		t.Fatal("neither migration waited for the other")
	}
	c := apimeta.FindStatusCondition(queued.Status.Conditions, v1alpha1.ConditionQueued)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonAdmitted {
		t.Errorf("Queued after the start: %+v", c)
	}
	said := eventSays(t, queued, v1alpha1.ConditionQueued)
	if !strings.Contains(said, "allows 1 migration(s) at once out of node node-a, and 1 runs ("+first.Namespace+"/"+first.Name+")") {
		t.Errorf("the Queued Event of %s says %q", queued.Name, said)
	}
	if !strings.Contains(drained, "migration "+queued.Namespace+"/"+queued.Name+" (pod "+queued.Spec.SourcePod+"): Pending, queued: MigrationPolicy e2e-policy allows 1") {
		t.Errorf("the drain did not show %s waiting", queued.Name)
	}
	var firstEnd *metav1.MicroTime
	var queuedStart metav1.MicroTime
	for _, p := range first.Status.PhaseTimings {
		if p.Phase == v1alpha1.PhaseFinalizing {
			firstEnd = p.End
		}
	}
	for _, p := range queued.Status.PhaseTimings {
		if p.Phase == v1alpha1.PhaseCheckpointing {
			queuedStart = p.Start
		}
	}
	if firstEnd == nil || queuedStart.Before(firstEnd) {
		t.Errorf("%s started at %s, before %s ended at %v", queued.Name, queuedStart.Time, first.Name, firstEnd)
	}
}

// drainTwo runs a Deployment's and a StatefulSet's consumer on node-a
// under load, each in a namespace named prefix+kind, opts both in to
// migrating, drains node-a with `kubectl migrate drain`, and checks that
// both serve on node-b with every message applied once. A policy, if
// given, governs both namespaces. It returns the two migrations and what
// the drain said.
func drainTwo(t *testing.T, prefix string, policy *v1alpha1.MigrationPolicySpec) ([]*v1alpha1.StatefulMigration, string) {
	rmq := labCfg.RabbitMQ()
	rc, err := clientcmd.BuildConfigFromFlags("", labCfg.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uncordon(t, "node-a") })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// Each workload opts in once it runs under load; the drain starts
	// when both have.
	optedIn := make(chan string, 2)
	optIn := func(ctx context.Context, ns, source string, spec v1alpha1.StatefulMigrationSpec) (string, error) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: source}, pod); err != nil {
			return "", err
		}
		patch := client.MergeFrom(pod.DeepCopy())
		q := spec.MessageQueueConfig
		pod.Labels[v1alpha1.LabelOnEviction] = string(v1alpha1.EvictionMigrate)
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		for k, v := range map[string]string{podstream.AnnotationBrokerURL: q.BrokerURL, podstream.AnnotationQueue: q.QueueName,
			podstream.AnnotationExchange: q.ExchangeName, podstream.AnnotationRoutingKey: q.RoutingKey, podstream.AnnotationMgmtURL: q.ManagementURL} {
			pod.Annotations[k] = v
		}
		if err := k8s.Patch(ctx, pod, patch); err != nil {
			return "", err
		}
		optedIn <- ns + "/" + source
		return evacuation.MigrationName(pod), nil
	}

	kinds := []string{demo.KindDeployment, demo.KindStatefulSet}
	if policy != nil {
		var names []string
		for _, kind := range kinds {
			names = append(names, prefix+strings.ToLower(kind))
		}
		policy.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: names}}}
		p := &v1alpha1.MigrationPolicy{ObjectMeta: metav1.ObjectMeta{Name: strings.TrimSuffix(prefix, "-")}, Spec: *policy}
		if err := k8s.Create(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	}
	results := make([]*demo.Result, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, kind := range kinds {
		ns := prefix + strings.ToLower(kind)
		t.Cleanup(func() {
			_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = demo.Run(ctx, demo.Options{
				Client: k8s, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), Exchange: ns,
				Workload: demo.Workload{Kind: kind, Namespace: ns, Name: "consumer", Image: images["consumer"], AMQPURL: rmq.AMQPURL(),
					Queue: ns, Delay: 10 * time.Millisecond, StateBytes: "1Mi", Prefetch: 10, Node: "node-a"},
				Rate: 20, Warmup: 3 * time.Second, Settle: 2 * time.Second, Timeout: 5 * time.Minute,
				Out: testWriter{t}, Trigger: optIn,
			})
		}()
	}
	for range kinds {
		select {
		case who := <-optedIn:
			t.Logf("%s opted in", who)
		case <-ctx.Done():
			wg.Wait()
			t.Fatalf("the workloads did not start: %v", errs)
		}
	}
	var out bytes.Buffer
	derr := cli.Drain(ctx, rc, k8s, "node-a", cli.DrainOptions{PodSelector: v1alpha1.LabelOnEviction + "=" + string(v1alpha1.EvictionMigrate),
		DeleteEmptyDirData: true, Timeout: 5 * time.Minute}, &out)
	t.Logf("drain:\n%s", out.String())
	if derr != nil {
		t.Fatal(derr)
	}
	wg.Wait()
	var migrations []*v1alpha1.StatefulMigration
	for i, kind := range kinds {
		res := results[i]
		if res != nil && res.Migration != nil {
			demo.Report(testWriter{t}, res)
		}
		if errs[i] != nil {
			t.Fatalf("%s: %v", kind, errs[i])
		}
		m := res.Migration
		migrations = append(migrations, m)
		if m.Status.Phase != v1alpha1.PhaseCompleted || m.Status.TargetNode != "node-b" || m.Labels[evacuation.LabelEvictedFrom] != "node-a" {
			t.Errorf("%s: migration %s %s to %s, labels %v", kind, m.Name, m.Status.Phase, m.Status.TargetNode, m.Labels)
		}
		if res.Lost != 0 || res.Duplicated != 0 || !res.DigestMatch || !res.StateIntact {
			t.Errorf("%s: lost=%d duplicated=%d digest match=%v memory intact=%v", kind, res.Lost, res.Duplicated, res.DigestMatch, res.StateIntact)
		}
		target := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, target); err != nil ||
			target.Spec.NodeName != "node-b" || target.Status.Phase != corev1.PodRunning || !target.DeletionTimestamp.IsZero() {
			t.Errorf("%s: target %s: %v on %s, %s", kind, m.Status.TargetPod, err, target.Spec.NodeName, target.Status.Phase)
		}
	}
	for _, want := range []string{"node node-a cordoned", "ms2m starts migrating pod " + prefix + "deployment/", "ms2m starts migrating pod " + prefix + "statefulset/consumer-0",
		"migrated off node-a:", "node node-a drained"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the drain did not say %q", want)
		}
	}
	return migrations, out.String()
}

func uncordon(t *testing.T, node string) {
	n := &corev1.Node{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: node}, n); err != nil {
		t.Error(err)
		return
	}
	patch := client.MergeFrom(n.DeepCopy())
	n.Spec.Unschedulable = false
	if err := k8s.Patch(context.Background(), n, patch); err != nil {
		t.Errorf("uncordoning %s: %v", node, err)
	}
}
