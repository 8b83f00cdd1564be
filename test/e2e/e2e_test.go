//go:build e2e

// Package e2e migrates live consumers in the lab (real kubelets,
// containerd, CRIU, RabbitMQ) under a running producer and checks the
// correctness contract from outside. Run by `make test-e2e`, which brings
// the lab up and down.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
	"github.com/ms2m/ms2m/internal/deploy"
	"github.com/ms2m/ms2m/internal/lab"
)

var (
	labCfg *lab.Config
	images map[string]string
	k8s    client.Client
)

func TestMain(m *testing.M) {
	c, err := lab.Default()
	if err == nil {
		c, err = lab.Load(c.Dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "the lab is not up (make lab-up):", err)
		os.Exit(1)
	}
	labCfg = c
	if images, err = lab.Deploy(context.Background(), c, "", os.Stderr); err == nil {
		k8s, err = c.Client()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploying ms2m into the lab:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

type scenario struct {
	kind  string
	image string
	spec  v1alpha1.StatefulMigrationSpec
	rate  int
	// burst messages at once before the rate; burstOnly: no rate after it
	burst     int
	burstOnly bool
	routes    []string // more routing keys bound and published to
	prefetch  int
	delay     time.Duration
	warmup    time.Duration
	env       map[string]string
	grace     int64
	restart   bool // the producer restarts during the warmup
	exactly   bool // the SDK consumer: exactly once; else at least once
	strategy  v1alpha1.MigrationStrategy
	journal   string // see demo.Workload.Journal
	state     string // the consumer's in-memory state (default 1Mi)
	// sidecar: the pod gets an init container and a second container
	// (demo.Workload.Sidecar)
	sidecar bool
	// during sees the migration while it runs (see demo.Options.During)
	during func(ctx context.Context, m *v1alpha1.StatefulMigration)
}

func run(t *testing.T, sc scenario) *demo.Result {
	t.Helper()
	rmq := labCfg.RabbitMQ()
	if sc.image == "" {
		sc.image = images["consumer"]
	}
	if sc.rate == 0 && !sc.burstOnly {
		sc.rate = 20
	}
	if sc.prefetch == 0 {
		sc.prefetch = 10
	}
	if sc.delay == 0 {
		sc.delay = 10 * time.Millisecond
	}
	if sc.warmup == 0 {
		sc.warmup = 3 * time.Second
	}
	if sc.state == "" {
		sc.state = "1Mi"
	}
	sc.spec.TargetNode = "node-b"
	sc.spec.ReplayCutoffSeconds = 30
	ns := "e2e-" + strings.ToLower(strings.NewReplacer("_", "-", "/", "-").Replace(t.Name()[len("Test"):]))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	before := replayQueues(t)
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	res, err := demo.Run(ctx, demo.Options{
		Client: k8s, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), Exchange: "e2e",
		Workload: demo.Workload{Kind: sc.kind, Namespace: ns, Name: "consumer", Image: sc.image, AMQPURL: rmq.AMQPURL(),
			Queue: ns, Delay: sc.delay, StateBytes: sc.state, Prefetch: sc.prefetch, Node: "node-a", Env: sc.env, Grace: sc.grace, Sidecar: sidecarImage(sc.sidecar)},
		Spec: sc.spec, Rate: sc.rate, Burst: sc.burst, Routes: sc.routes, RestartProducer: sc.restart, Warmup: sc.warmup, Settle: 2 * time.Second,
		Timeout: 4 * time.Minute, Out: testWriter{t}, During: sc.during,
	})
	if res != nil && res.Migration != nil {
		demo.Report(testWriter{t}, res)
	}
	if err != nil {
		t.Fatal(err)
	}
	m := res.Migration
	if m.Status.Phase != v1alpha1.PhaseCompleted || m.Status.Plan.Strategy != sc.strategy {
		t.Fatalf("migration %s with strategy %s, want Completed %s", m.Status.Phase, m.Status.Plan.Strategy, sc.strategy)
	}
	// Where the target restores through ms2m's runtime handler the agent
	// dumps with runc, holding the source for the Handoff (Auto's choice
	// for a Sequential source, and for a ShadowPod one without the SDK on
	// the scenarios' classic queues); otherwise the kubelet dumps
	// (containerd 2.1 restoring checkpoint images).
	wantEngine, wantHold := v1alpha1.CheckpointEngineKubelet, false
	if m.Status.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler {
		wantEngine, wantHold = v1alpha1.CheckpointEngineRunc, sc.strategy == v1alpha1.StrategySequential || !sc.exactly
	}
	if m.Status.Plan.CheckpointEngine != wantEngine || m.Status.Plan.HoldSource != wantHold {
		t.Errorf("checkpoint engine %s (hold %v; %s), want %s (hold %v) for restore path %s",
			m.Status.Plan.CheckpointEngine, m.Status.Plan.HoldSource, m.Status.Plan.CheckpointEngineReason, wantEngine, wantHold, m.Status.Plan.RestorePath)
	}
	// The lab installs ms2m's freeze hook: a lone container dumped whole
	// with runc and resumed after froze only once runc and CRIU had
	// started, which the Checkpoint Event's steps show.
	if m.Status.Plan.CheckpointEngine == v1alpha1.CheckpointEngineRunc && !m.Status.Plan.HoldSource && len(m.Status.Plan.CheckpointedContainers) == 0 &&
		m.Status.Plan.MemoryTechnique == v1alpha1.MemoryStopAndCopy {
		if said := eventSays(t, m, v1alpha1.ConditionCheckpointCreated); !strings.Contains(said, "(start-up ") {
			t.Errorf("the Checkpoint Event says %q: the source froze before runc and CRIU had started", said)
		}
	}
	// A checkpoint the runtime handler restores crossed encrypted, and
	// decrypted into the state checked below; one the runtime restores
	// itself could not.
	if wantEncrypted := m.Status.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler; m.Status.Plan.EncryptCheckpoint != wantEncrypted {
		t.Errorf("checkpoint encrypted %v (%s), want %v for restore path %s", m.Status.Plan.EncryptCheckpoint, m.Status.Plan.EncryptionReason, wantEncrypted, m.Status.Plan.RestorePath)
	}
	if sc.exactly && (res.Lost != 0 || res.Duplicated != 0 || !res.DigestMatch || !res.StateIntact) {
		t.Errorf("lost=%d duplicated=%d digest match=%v memory intact=%v", res.Lost, res.Duplicated, res.DigestMatch, res.StateIntact)
	}
	// The source is gone, the target runs on node-b, owned as the source was.
	target := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Status.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	if target.Spec.NodeName != "node-b" || target.Status.Phase != corev1.PodRunning {
		t.Errorf("target %s on %s is %s", target.Name, target.Spec.NodeName, target.Status.Phase)
	}
	if sc.kind != demo.KindStatefulSet {
		// The source let go of the queue at cutover; its pod goes after a
		// short HTTP drain.
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Spec.SourcePod}, &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("source pod %s still exists 30 s after the migration: %v", m.Spec.SourcePod, err)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wantOwner := map[string]string{demo.KindPod: "", demo.KindDeployment: "ReplicaSet", demo.KindStatefulSet: "StatefulSet"}[sc.kind]
	gotOwner := ""
	for _, o := range target.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			gotOwner = o.Kind
		}
	}
	if gotOwner != wantOwner {
		t.Errorf("target owned by %q, want %q (pod uid %s created %s, owners %+v, labels %v; conditions %+v)", gotOwner, wantOwner,
			target.UID, target.CreationTimestamp, target.OwnerReferences, target.Labels, m.Status.Conditions)
	}
	// The checkpoint (the workload's memory) is gone from the target
	// node's runtime under every name, once the migration has completed.
	deadline := time.Now().Add(30 * time.Second)
	for !apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.ConditionCheckpointRemoved) {
		if time.Now().After(deadline) {
			t.Fatalf("CheckpointRemoved not True 30 s after completion: %+v", apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionCheckpointRemoved))
		}
		time.Sleep(200 * time.Millisecond)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			t.Fatal(err)
		}
	}
	checkpoints := []string{m.Status.Checkpoint.Image}
	if sc.spec.IdentitySwapMode != "" {
		swap := &v1alpha1.StatefulMigration{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Name + "-swap"}, swap); err != nil {
			t.Fatal(err)
		}
		if swap.Status.Phase != v1alpha1.PhaseCompleted || swap.Status.Checkpoint == nil {
			t.Fatalf("identity swap %s: %s", swap.Name, swap.Status.Phase)
		}
		for !apimeta.IsStatusConditionTrue(swap.Status.Conditions, v1alpha1.ConditionCheckpointRemoved) {
			if time.Now().After(deadline) {
				t.Fatalf("identity swap %s: CheckpointRemoved not True", swap.Name)
			}
			time.Sleep(200 * time.Millisecond)
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(swap), swap); err != nil {
				t.Fatal(err)
			}
		}
		checkpoints = append(checkpoints, swap.Status.Checkpoint.Image)
	}
	for _, ck := range checkpoints {
		if left := runtimeImages(t, "node-b", ck); len(left) > 0 {
			t.Errorf("node-b's runtime still holds the checkpoint %s as %v", ck, left)
		}
	}
	// The broker is as before: no replay queue left.
	if after := replayQueues(t); !slices.Equal(before, after) {
		t.Errorf("replay queues before %v, after %v", before, after)
	}
	return res
}

// eventSays is the message of the migration's last Event with reason.
func eventSays(t *testing.T, m *v1alpha1.StatefulMigration, reason string) string {
	t.Helper()
	events := &corev1.EventList{}
	if err := k8s.List(context.Background(), events, client.InNamespace(m.Namespace)); err != nil {
		t.Fatal(err)
	}
	said := ""
	for _, e := range events.Items {
		if e.InvolvedObject.Name == m.Name && e.Reason == reason {
			said = e.Message
		}
	}
	return said
}

func TestShadowPodDeploymentRegistry(t *testing.T) {
	run(t, scenario{kind: demo.KindDeployment, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}})
}

func TestShadowPodDeploymentDirect(t *testing.T) {
	run(t, scenario{kind: demo.KindDeployment, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect}})
}

func TestShadowPodBarePodDrain(t *testing.T) {
	run(t, scenario{kind: demo.KindPod, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		spec: v1alpha1.StatefulMigrationSpec{ReplayMode: v1alpha1.ReplayDrain, TransferMode: v1alpha1.TransferDirect}})
}

func TestSequentialStatefulSet(t *testing.T) {
	run(t, scenario{kind: demo.KindStatefulSet, exactly: true, strategy: v1alpha1.StrategySequential,
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}})
}

func TestShadowPodStatefulSetExchangeFenceRegistry(t *testing.T) {
	run(t, scenario{kind: demo.KindStatefulSet, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		spec: v1alpha1.StatefulMigrationSpec{MigrationStrategy: v1alpha1.StrategyShadowPod,
			IdentitySwapMode: v1alpha1.IdentitySwapExchangeFence, TransferMode: v1alpha1.TransferRegistry}})
}

func TestShadowPodStatefulSetExchangeFenceDirect(t *testing.T) {
	run(t, scenario{kind: demo.KindStatefulSet, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		spec: v1alpha1.StatefulMigrationSpec{MigrationStrategy: v1alpha1.StrategyShadowPod,
			IdentitySwapMode: v1alpha1.IdentitySwapExchangeFence, TransferMode: v1alpha1.TransferDirect}})
}

// The first confirmed loss: a consumer with a deep prefetch and slow
// processing holds a burst when the replay queue is bound, and nothing is
// published after it. The checkpoint must wait until the source has
// applied what it holds (the SDK source is handed fences behind it).
func TestPrefetchedBurstIsNotLost(t *testing.T) {
	res := run(t, scenario{kind: demo.KindPod, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		prefetch: 20, delay: 200 * time.Millisecond, burst: 30, burstOnly: true, warmup: 70 * time.Millisecond,
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}})
	if res.Published != 30 {
		t.Errorf("published %d, want the burst of 30", res.Published)
	}
}

// The second confirmed loss: the queue is bound with two keys, the spec
// names one, and the producer publishes on both in one sequence. Every
// route must reach the replay queue, and stop reaching it at one instant.
func TestEveryRouteIsReplayed(t *testing.T) {
	run(t, scenario{kind: demo.KindPod, exactly: true, strategy: v1alpha1.StrategyShadowPod,
		rate: 15, routes: []string{"us"},
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}})
}

// A producer that restarts starts a sequence of its own (a new identity):
// nothing it publishes is taken for a duplicate of its earlier life, before
// or across the migration.
func TestRestartedProducer(t *testing.T) {
	res := run(t, scenario{kind: demo.KindPod, exactly: true, strategy: v1alpha1.StrategyShadowPod, restart: true,
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}})
	if res.Applied != res.Published {
		t.Errorf("applied %d of the two producers' %d", res.Applied, res.Published)
	}
}

// A workload written for MS2M, speaking only the control protocol, without
// the SDK: it migrates, at least once (it neither de-duplicates nor
// notices the restore).
func TestProtocolOnlyWorkload(t *testing.T) {
	res := run(t, scenario{kind: demo.KindPod, image: images["protocol-consumer"], strategy: v1alpha1.StrategyShadowPod})
	atLeastOnce(t, res)
}

// The kind of workload SHADOW's sample is: only the control protocol, its
// control queue polled with basic.get (no consumer on it, ever), SIGTERM
// ignored as by a PID 1 without a handler, prefetch 1, Kubernetes' default
// 30 s grace. Nothing may wait for a consumer on its control queue or for
// its grace period; the handoff is at least once.
//
// Handoff (Auto's choice for it) takes its queue at the checkpoint: the
// source, thawed, serves but takes nothing more, and the target consumes
// the queue directly, with no replay and no control message.
func TestShadowLikeWorkloadDeployment(t *testing.T) {
	res := run(t, shadowLike(demo.KindDeployment, v1alpha1.StrategyShadowPod))
	atLeastOnce(t, res)
	handedOff(t, res, v1alpha1.ConditionSourceQuiesced)
}

func TestShadowLikeWorkloadStatefulSet(t *testing.T) {
	res := run(t, shadowLike(demo.KindStatefulSet, v1alpha1.StrategySequential))
	atLeastOnce(t, res)
	handedOff(t, res, v1alpha1.ConditionSourceStopped)
}

// Post-copy: the target restores from a dump without memory pages, runs
// at once and takes the 64 MiB of state from the held source as it
// touches it, the rest in the background; the state arrives whole and the
// stream exactly once. Where the target restores checkpoint images
// (containerd 2.1 without ms2m's runtime handler) it is refused in
// Pending, before anything changes.
func TestSequentialStatefulSetPostCopy(t *testing.T) {
	spec := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryPostCopy}
	if labCfg.RuntimeHandler == "" {
		failing(t, scenario{kind: demo.KindStatefulSet, spec: spec}, v1alpha1.ReasonNoMemoryTechnique)
		return
	}
	res := run(t, scenario{kind: demo.KindStatefulSet, exactly: true, strategy: v1alpha1.StrategySequential, state: "64Mi", spec: spec})
	st := &res.Migration.Status
	if st.Plan.MemoryTechnique != v1alpha1.MemoryPostCopy {
		t.Fatalf("memory technique %q (%s), want PostCopy", st.Plan.MemoryTechnique, st.Plan.MemoryTechniqueReason)
	}
	pagesCameAfter(t, st)
}

// pagesCameAfter checks a PostCopy migration of a 64 MiB consumer: the
// checkpoint held no lazy pages, and they all came after the restore.
func pagesCameAfter(t *testing.T, st *v1alpha1.StatefulMigrationStatus) {
	t.Helper()
	if !apimeta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionMemoryTransferred) {
		t.Errorf("MemoryTransferred not True: %+v", apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionMemoryTransferred))
	}
	if st.Checkpoint.SizeBytes >= 16<<20 || st.Transfer == nil || st.Transfer.PageBytes < 64<<20 {
		t.Errorf("checkpoint %d bytes, %+v: want a small checkpoint and at least 64 MiB of pages after it", st.Checkpoint.SizeBytes, st.Transfer)
	}
}

// handedOff checks a migration used the Handoff technique and that step
// of it was done.
func handedOff(t *testing.T, res *demo.Result, step string) {
	t.Helper()
	st := &res.Migration.Status
	if st.Plan.CheckpointEngine != v1alpha1.CheckpointEngineRunc {
		// only the runc engine holds a source (containerd 2.1 restoring
		// checkpoint images takes the kubelet's): Auto replays
		if st.Plan.Handoff != v1alpha1.HandoffReplay {
			t.Errorf("handoff %q with the %s engine, want Replay", st.Plan.Handoff, st.Plan.CheckpointEngine)
		}
		return
	}
	c := apimeta.FindStatusCondition(st.Conditions, step)
	if st.Plan.Handoff != v1alpha1.HandoffHandoff || !st.Plan.HoldSource || c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("handoff %q (%s), source held %v, %s %+v", st.Plan.Handoff, st.Plan.HandoffReason, st.Plan.HoldSource, step, c)
	}
	if st.Messages != nil && st.Messages.Buffered != 0 {
		t.Errorf("%d message(s) went through a replay queue; a Handoff feeds none", st.Messages.Buffered)
	}
}

func shadowLike(kind string, strategy v1alpha1.MigrationStrategy) scenario {
	return scenario{kind: kind, image: images["protocol-consumer"], strategy: strategy, rate: 10, prefetch: 50,
		delay: 10 * time.Millisecond, grace: 30, env: map[string]string{"MS2M_CONTROL": "poll", "MS2M_IGNORE_SIGTERM": "1"},
		spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}}
}

// atLeastOnce checks the serving protocol-only consumer saw every message
// published, and that the migration says it could not verify the stream.
func atLeastOnce(t *testing.T, res *demo.Result) {
	t.Helper()
	var st struct {
		Contiguous, Distinct, Repeats int64
	}
	pod := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: res.Migration.Namespace, Name: res.Migration.Status.TargetPod}, pod); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + pod.Status.PodIP + ":8080/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Contiguous < res.Published {
		t.Errorf("the target saw 1..%d of %d published (at least once broken)", st.Contiguous, res.Published)
	}
	c := apimeta.FindStatusCondition(res.Migration.Status.Conditions, v1alpha1.ConditionStreamIntact)
	if c == nil || c.Status != metav1.ConditionUnknown || c.Reason != v1alpha1.ReasonNotReported {
		t.Errorf("StreamIntact %+v, want Unknown/%s for a workload that does not report", c, v1alpha1.ReasonNotReported)
	}
	t.Logf("protocol-only workload: %d distinct, %d seen again (at-least-once)", st.Distinct, st.Repeats)
}

func replayQueues(t *testing.T) []string {
	t.Helper()
	var qs []struct{ Name string }
	mgmtGet(t, "/api/queues/%2F", &qs)
	var out []string
	for _, q := range qs {
		if strings.HasPrefix(q.Name, "ms2m.replay.") {
			out = append(out, q.Name)
		}
	}
	slices.Sort(out)
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ---- failures: the source keeps serving, nothing is left behind ----

// failing runs a migration that must fail with reason and roll back: the
// source served on and applied every published message exactly once, the
// target pod is gone, and no replay queue is left.
func failing(t *testing.T, sc scenario, reason string) *v1alpha1.StatefulMigration {
	t.Helper()
	rmq := labCfg.RabbitMQ()
	ns := "e2e-" + strings.ToLower(strings.NewReplacer("_", "-", "/", "-").Replace(t.Name()[len("Test"):]))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	before := replayQueues(t)
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	sc.spec.TargetNode, sc.spec.ReplayCutoffSeconds = "node-b", 30
	if sc.state == "" {
		sc.state = "1Mi"
	}
	wl := demo.Workload{Kind: sc.kind, Namespace: ns, Name: "consumer", Image: images["consumer"], AMQPURL: rmq.AMQPURL(),
		Queue: ns, Delay: 10 * time.Millisecond, StateBytes: sc.state, Prefetch: 10, Node: "node-a", Journal: sc.journal, Sidecar: sidecarImage(sc.sidecar)}
	res, err := demo.Run(ctx, demo.Options{Client: k8s, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), Exchange: "e2e",
		Workload: wl, Spec: sc.spec, Rate: 20, Warmup: 3 * time.Second, Settle: 3 * time.Second, Timeout: 4 * time.Minute, Out: testWriter{t},
		During: sc.during})
	if res == nil || res.Migration == nil {
		t.Fatalf("no migration ran: %v", err)
	}
	m := res.Migration
	demo.Report(testWriter{t}, res)
	if m.Status.Phase != v1alpha1.PhaseFailed || m.Status.FailureReason != reason {
		t.Fatalf("migration %s (%s: %s), want Failed with %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage, reason)
	}
	if res.Serving != m.Spec.SourcePod {
		t.Fatalf("state checked on %q, want the source %s (rolled back: %v)", res.Serving, m.Spec.SourcePod, err)
	}
	if res.Lost != 0 || res.Duplicated != 0 || !res.DigestMatch {
		t.Errorf("the source after the rollback: lost=%d duplicated=%d digest match=%v", res.Lost, res.Duplicated, res.DigestMatch)
	}
	events := &corev1.EventList{}
	if err := k8s.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(events.Items, func(e corev1.Event) bool { return e.Reason == reason && e.Type == corev1.EventTypeWarning }) {
		t.Errorf("no Warning Event with reason %s", reason)
	}
	if m.Status.TargetPod != "" {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Status.TargetPod}, &corev1.Pod{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("target pod %s left behind: %v", m.Status.TargetPod, err)
		}
	}
	if after := replayQueues(t); !slices.Equal(before, after) {
		t.Errorf("replay queues before %v, after %v", before, after)
	}
	t.Logf("failed as expected: %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
	return m
}

// A consumer that keeps a journal open on a node-local emptyDir volume:
// the checkpoint holds the open file by path, not the volume's contents,
// so CRIU on node-b cannot restore it (the file is not there). Real
// restore failure, real rollback.
func TestRestoreFailureRollsBack(t *testing.T) {
	m := failing(t, scenario{kind: demo.KindPod, journal: "journal", spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry}},
		v1alpha1.ReasonRestoreFailed)
	// Through ms2m's runtime handler the failure names CRIU's reason (the
	// journal it could not open), not only runc's "criu failed".
	if m.Status.Plan.RestorePath == v1alpha1.RestoreRuntimeHandler &&
		(!strings.Contains(m.Status.FailureMessage, "CRIU: Error") || !strings.Contains(m.Status.FailureMessage, "journal")) {
		t.Errorf("the failure does not say CRIU's reason: %s", m.Status.FailureMessage)
	}
}

// node-b without its agent (the DaemonSet kept off it): the migration is
// refused before it changes anything.
func TestTargetWithoutAgentFails(t *testing.T) {
	withoutAgentOn(t, "node-b")
	failing(t, scenario{kind: demo.KindPod, spec: v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect}},
		v1alpha1.ReasonAgentUnavailable)
}

// withoutAgentOn keeps the agent DaemonSet off node until the test ends.
func withoutAgentOn(t *testing.T, node string) {
	t.Helper()
	ctx := context.Background()
	key := client.ObjectKey{Namespace: "ms2m-system", Name: "ms2m-agent"}
	ds := &appsv1.DaemonSet{}
	if err := k8s.Get(ctx, key, ds); err != nil {
		t.Fatal(err)
	}
	orig := ds.Spec.Template.Spec.Affinity
	setAffinity := func(a *corev1.Affinity) {
		t.Helper()
		if err := k8s.Get(ctx, key, ds); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(ds.DeepCopy())
		ds.Spec.Template.Spec.Affinity = a
		if err := k8s.Patch(ctx, ds, patch); err != nil {
			t.Fatal(err)
		}
	}
	// Changing the template replaces the agent on every node, not only
	// on node: wait for the whole rollout, or the next test finds the
	// other node's agent restarting.
	rollout := func() {
		t.Helper()
		if err := deploy.WaitReady(ctx, k8s, key.Namespace, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	setAffinity(&corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
			Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpNotIn, Values: []string{node}}}}}}}})
	t.Cleanup(func() {
		setAffinity(orig)
		rollout()
	})
	rollout()
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabels(ds.Spec.Selector.MatchLabels)); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.Spec.NodeName == node }) {
		t.Fatalf("an agent pod still runs on %s after the rollout", node)
	}
}

// runtimeImages lists the names under which node's containerd (the
// kubelet's namespace) holds image: the name itself, or any name of the
// same content (the runtime also records a pulled image by its ID).
func runtimeImages(t *testing.T, node, image string) []string {
	t.Helper()
	imgs, err := runtimeImagesOf(node, image)
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

// runtimeImagesOf is runtimeImages for a runtime that may not answer (one
// a fault killed, restarting).
func runtimeImagesOf(node, image string) ([]string, error) {
	var n lab.Node
	for _, x := range labCfg.Nodes {
		if x.Name == node {
			n = x
		}
	}
	cl, err := containerd.New(labCfg.NodeParams(n).Socket(), containerd.WithDefaultNamespace("k8s.io"))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	imgs, err := cl.ImageService().List(context.Background())
	if err != nil {
		return nil, err
	}
	_, digest, _ := strings.Cut(image, "@")
	var out []string
	for _, i := range imgs {
		if i.Name == image || (digest != "" && i.Target.Digest.String() == digest) {
			out = append(out, i.Name)
		}
	}
	return out, nil
}

func sidecarImage(want bool) string {
	if !want {
		return ""
	}
	return images["counter"]
}
