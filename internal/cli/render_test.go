package cli

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
)

func TestRenderShowsPhasesAndProgress(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	m := &v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "m1", Namespace: "shop"},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "consumer-0"}}
	st := &m.Status
	migration.EnterPhase(st, v1alpha1.PhasePending, t0)
	migration.EnterPhase(st, v1alpha1.PhaseCheckpointing, t0.Add(12*time.Millisecond))
	migration.EnterPhase(st, v1alpha1.PhaseTransferring, t0.Add(640*time.Millisecond))
	st.SourceNode, st.TargetNode, st.TargetPod = "node-a", "node-b", "consumer-0-shadow"
	st.Plan = v1alpha1.MigrationPlan{Strategy: v1alpha1.StrategyShadowPod, StrategyReason: "bare pod",
		TransferMode: v1alpha1.TransferDirect, TransferModeReason: "set in spec.transferMode", Handoff: v1alpha1.HandoffReplay}
	st.Checkpoint = &v1alpha1.CheckpointStatus{SizeBytes: 3 << 20, FreezeDuration: &metav1.Duration{Duration: 450 * time.Millisecond}}
	st.Transfer = &v1alpha1.TransferStatus{BytesTotal: 3 << 20, BytesTransferred: 3 << 19, RateBytesPerSecond: 10 << 20}
	out := Render(m, t0.Add(time.Second))
	for _, want := range []string{"Phase:      Transferring", "consumer-0 -> consumer-0-shadow", "node-a -> node-b",
		"Checkpointing  628ms", "Transferring   running 360ms", "3.0 MiB", "frozen 450ms", "(50%) at 10.0 MiB/s",
		"strategy:   ShadowPod (bare pod)", "transfer:   Direct (set in spec.transferMode)", "handoff:    Replay\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestStreamFlagsFallBackToAnnotations(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		AnnotationBrokerURL: "amqp://rabbit:5672/", AnnotationQueue: "orders", AnnotationExchange: "orders-x",
		AnnotationRoutingKey: "orders", AnnotationCredentials: "rabbit-creds"}}}
	c := StreamFlags{Queue: "override"}.MessageQueueConfig(pod)
	if c.QueueName != "override" || c.BrokerURL != "amqp://rabbit:5672/" || c.ExchangeName != "orders-x" || c.CredentialsSecretRef.Name != "rabbit-creds" {
		t.Fatalf("%+v", c)
	}
	if (StreamFlags{}).MessageQueueConfig(&corev1.Pod{}) != nil {
		t.Fatal("no flags and no annotations must mean no message queue")
	}
}

func TestRenderShowsTheQueueAndThePolicy(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	m := &v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "m2", Namespace: "shop"},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "consumer-1"}}
	migration.EnterPhase(&m.Status, v1alpha1.PhasePending, t0)
	migration.SetCondition(&m.Status, 1, v1alpha1.ConditionQueued, metav1.ConditionTrue, v1alpha1.ReasonParallelismLimit,
		"MigrationPolicy drain allows 1 migration(s) at once out of node node-a, and 1 runs (shop/m1)", t0)
	if out := Render(m, t0); !strings.Contains(out, "Queued:     MigrationPolicy drain allows 1") {
		t.Errorf("a queued migration does not say why:\n%s", out)
	}
	m.Status.Plan = v1alpha1.MigrationPlan{Strategy: v1alpha1.StrategyShadowPod, Policy: "drain", PolicyGeneration: 4,
		Timeouts: &v1alpha1.MigrationTimeouts{Total: &metav1.Duration{Duration: time.Minute}}}
	if out := Render(m, t0); !strings.Contains(out, "policy:     drain (generation 4)") || !strings.Contains(out, "timeouts:   total 1m0s, checkpoint -") {
		t.Errorf("the plan does not show its policy and timeouts:\n%s", out)
	}
	m.Status.Plan.CheckpointedContainers, m.Status.Plan.FreshContainers, m.Status.Plan.FreshContainersReason = []string{"counter"}, []string{"init"}, "cut"
	m.Status.Plan.EncryptCheckpoint, m.Status.Plan.EncryptionReason = true, "AES-256-GCM"
	m.Status.Plan.BandwidthBytesPerSecond, m.Status.Plan.BandwidthReason = 64<<20, "MigrationPolicy drain"
	out := Render(m, t0)
	for _, want := range []string{"containers: with counter; fresh init", "encryption: on", "bandwidth:  64.0 MiB/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("the plan lacks %q:\n%s", want, out)
		}
	}
}

func TestDrainSaysEachRetryOnce(t *testing.T) {
	var b strings.Builder
	f := &firstSaid{w: &b, said: map[string]bool{}}
	for _, l := range []string{
		"evicting pod shop/c-0\n",
		`error when evicting pods/"c-0" -n "shop" (will retry after 5s): ... (StatefulMigration m, Pending) ...` + "\n",
		"evicting pod shop/c-0\n",
		`error when evicting pods/"c-0" -n "shop" (will retry after 5s): ... (StatefulMigration m, Transferring) ...` + "\n",
		"evicting pod shop/c-1\n",
		"pod shop/c-0 is off node-a\n",
	} {
		if _, err := f.Write([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	want := "evicting pod shop/c-0\n" + `error when evicting pods/"c-0" -n "shop" (will retry after 5s): ... (StatefulMigration m, Pending) ...` + "\n" +
		"evicting pod shop/c-1\npod shop/c-0 is off node-a\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func transferring(t0 time.Time) *v1alpha1.StatefulMigration {
	m := &v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "m3", Namespace: "shop"},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: "consumer-2"}}
	st := &m.Status
	migration.EnterPhase(st, v1alpha1.PhasePending, t0)
	migration.EnterPhase(st, v1alpha1.PhaseCheckpointing, t0.Add(10*time.Millisecond))
	migration.EnterPhase(st, v1alpha1.PhaseTransferring, t0.Add(900*time.Millisecond))
	st.SourceNode, st.TargetNode = "node-a", "node-b"
	st.Plan = v1alpha1.MigrationPlan{Strategy: v1alpha1.StrategyShadowPod, MemoryTechnique: v1alpha1.MemoryStopAndCopy}
	st.Transfer = &v1alpha1.TransferStatus{BytesTotal: 512 << 20, BytesTransferred: 128 << 20, BytesRemaining: 384 << 20, RateBytesPerSecond: 64 << 20}
	return m
}

func TestFrameDrawsTheCurrentPhasesBar(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	out := Frame(transferring(t0), t0.Add(2900*time.Millisecond), 46)
	for _, want := range []string{
		"shop/m3  node-a -> node-b  ShadowPod, StopAndCopy\n",
		"  v Checkpointing  890ms\n",
		"  > Transferring   2s\n",
		"    [########-------------------------]  25%\n",
		"    128.0 MiB of 512.0 MiB (25%) at 64.0 MiB/s, 384.0 MiB left, ETA 6s\n",
		"  . Restoring",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestViewsOffATerminal(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	m := transferring(t0)
	var b strings.Builder
	v, err := newView(&b, "", true) // a strings.Builder is no terminal
	if err != nil {
		t.Fatal(err)
	}
	v.show(m, t0)
	v.show(m, t0.Add(time.Second)) // nothing changed: no line
	m.Status.Transfer.BytesTransferred = 256 << 20
	v.show(m, t0.Add(2*time.Second))
	if lines := strings.Count(b.String(), "\n"); lines != 2 || strings.Contains(b.String(), "\x1b[") {
		t.Fatalf("want two plain lines:\n%q", b.String())
	}
	b.Reset()
	v, _ = newView(&b, "json", true)
	v.show(m, t0)
	if !strings.Contains(b.String(), `"bytesTransferred": 268435456`) {
		t.Fatalf("json: %s", b.String())
	}
	if _, err := newView(&b, "xml", true); err == nil {
		t.Fatal("an unknown format must be refused")
	}
}

func TestLiveViewRedrawsInPlace(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var b strings.Builder
	v := &liveView{out: &b, width: 80}
	m := transferring(t0)
	v.show(m, t0)
	first := strings.Count(b.String(), "\n")
	v.show(m, t0.Add(time.Second))
	if !strings.Contains(b.String(), fmt.Sprintf("\x1b[%dA\r\x1b[J", first)) {
		t.Fatalf("the second frame does not replace the first:\n%q", b.String())
	}
}

// Every kubectl migrate command shows an example in its --help.
func TestEveryPluginCommandHasAnExample(t *testing.T) {
	for _, c := range NewCommand(io.Discard).Commands() {
		if c.Runnable() && c.Example == "" {
			t.Errorf("%q has no example in its --help", c.CommandPath())
		}
	}
}
