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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
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
	results := make([]*demo.Result, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, kind := range kinds {
		ns := "e2e-drain-" + strings.ToLower(kind)
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
	for i, kind := range kinds {
		res := results[i]
		if res != nil && res.Migration != nil {
			demo.Report(testWriter{t}, res)
		}
		if errs[i] != nil {
			t.Fatalf("%s: %v", kind, errs[i])
		}
		m := res.Migration
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
	for _, want := range []string{"node node-a cordoned", "ms2m starts migrating pod e2e-drain-deployment/", "ms2m starts migrating pod e2e-drain-statefulset/consumer-0",
		"migrated off node-a:", "node node-a drained"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the drain did not say %q", want)
		}
	}
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
