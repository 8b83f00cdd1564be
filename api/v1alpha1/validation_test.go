package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
)

// These tests apply manifests to a real kube-apiserver with the generated
// CRD: the schema and its CEL rules are what is under test.

var (
	k8s client.Client
	// admin is the API server's administrator's configuration, for tests
	// that act as other users through impersonation.
	admin *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithAPIServer(m, func(_ *envtest.Environment, cfg *rest.Config) (err error) {
		admin = cfg
		k8s, err = client.New(cfg, client.Options{Scheme: runtime.NewScheme()})
		return err
	}))
}

// shadowManifest uses every field of the MS2M/SHADOW StatefulMigration, as
// their users write it.
const shadowManifest = `
apiVersion: migration.ms2m.io/v1alpha1
kind: StatefulMigration
metadata:
  name: NAME
  namespace: default
spec:
  sourcePod: consumer-0
  containerName: consumer
  targetNode: worker-2
  checkpointImageRepository: registry.example.com:5000/checkpoints
  replayCutoffSeconds: 15
  replayMode: Cutoff
  migrationStrategy: ShadowPod
  transferMode: Direct
  identitySwapMode: ExchangeFence
  messageQueueConfig:
    queueName: app.events
    brokerUrl: amqp://guest:guest@rabbitmq.rabbitmq.svc.cluster.local:5672/
    exchangeName: app.events.fanout
    routingKey: app.events
`

var seq int

func manifest(t *testing.T, mutate func(spec map[string]any)) *unstructured.Unstructured {
	t.Helper()
	seq++
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(strings.Replace(shadowManifest, "NAME", fmt.Sprintf("m%d", seq), 1)), &u.Object); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(u.Object["spec"].(map[string]any))
	}
	return u
}

func mq(spec map[string]any) map[string]any { return spec["messageQueueConfig"].(map[string]any) }

func TestShadowManifestAppliesUnchanged(t *testing.T) {
	testenv.NeedsServices(t)
	u := manifest(t, nil)
	if err := k8s.Create(context.Background(), u); err != nil {
		t.Fatalf("a manifest with every SHADOW field was refused: %v", err)
	}
	for _, strategy := range []string{"", "auto", "Auto", "Sequential"} {
		u := manifest(t, func(s map[string]any) {
			s["migrationStrategy"] = strategy
			delete(s, "identitySwapMode")
			s["replayMode"] = "Drain"
			s["transferMode"] = "Registry"
		})
		if err := k8s.Create(context.Background(), u); err != nil {
			t.Errorf("migrationStrategy %q refused: %v", strategy, err)
		}
	}
	minimal := manifest(t, func(s map[string]any) {
		for k := range s {
			if k != "sourcePod" {
				delete(s, k)
			}
		}
	})
	if err := k8s.Create(context.Background(), minimal); err != nil {
		t.Errorf("a migration naming only its pod was refused: %v", err)
	}
}

func TestInvalidSpecsAreRefusedWithAFix(t *testing.T) {
	testenv.NeedsServices(t)
	for _, tc := range []struct {
		name   string
		mutate func(s map[string]any)
		meta   func(u *unstructured.Unstructured)
		want   []string // all must appear in the API server's message
	}{
		{"missing sourcePod", func(s map[string]any) { delete(s, "sourcePod") }, nil, []string{"spec.sourcePod", "Required"}},
		{"sourcePod not a pod name", func(s map[string]any) { s["sourcePod"] = "Consumer_0" }, nil, []string{"spec.sourcePod", "lowercase"}},
		{"bad replayMode", func(s map[string]any) { s["replayMode"] = "Sometimes" }, nil, []string{"spec.replayMode", `"Cutoff", "Drain"`}},
		{"bad migrationStrategy", func(s map[string]any) { s["migrationStrategy"] = "Teleport" }, nil, []string{"spec.migrationStrategy", `"ShadowPod"`, `"Sequential"`}},
		{"bad transferMode", func(s map[string]any) { s["transferMode"] = "Carrier" }, nil, []string{"spec.transferMode", `"Registry", "Direct"`}},
		{"bad identitySwapMode", func(s map[string]any) { s["identitySwapMode"] = "Magic" }, nil, []string{"spec.identitySwapMode", `"ExchangeFence"`}},
		{"bad memoryTechnique", func(s map[string]any) { s["memoryTechnique"] = "Teleport" }, nil, []string{"spec.memoryTechnique", `"StopAndCopy"`, `"PostCopy"`}},
		{"bad otherContainers", func(s map[string]any) { s["otherContainers"] = "Ignore" }, nil, []string{"spec.otherContainers", `"Checkpoint", "StartFresh"`}},
		{"negative cutoff", func(s map[string]any) { s["replayCutoffSeconds"] = -5 }, nil, []string{"spec.replayCutoffSeconds", "between 0 and 3600"}},
		{"cutoff too long", func(s map[string]any) { s["replayCutoffSeconds"] = 4000 }, nil, []string{"spec.replayCutoffSeconds", "between 0 and 3600"}},
		{"http brokerUrl", func(s map[string]any) { mq(s)["brokerUrl"] = "http://rabbitmq:5672/" }, nil, []string{"spec.messageQueueConfig.brokerUrl", "amqp://"}},
		{"brokerUrl without host", func(s map[string]any) { mq(s)["brokerUrl"] = "amqp://" }, nil, []string{"brokerUrl", "with a host"}},
		{"brokerUrl not a URL", func(s map[string]any) { mq(s)["brokerUrl"] = "rabbitmq:5672" }, nil, []string{"brokerUrl", "amqp://"}},
		{"missing queueName", func(s map[string]any) { delete(mq(s), "queueName") }, nil, []string{"spec.messageQueueConfig.queueName", "Required"}},
		{"reserved queueName", func(s map[string]any) { mq(s)["queueName"] = "amq.gen-1" }, nil, []string{"queueName", "amq."}},
		{"missing exchangeName", func(s map[string]any) { delete(mq(s), "exchangeName") }, nil, []string{"exchangeName is required", "default exchange cannot be bound"}},
		{"missing brokerUrl", func(s map[string]any) { delete(mq(s), "brokerUrl") }, nil, []string{"spec.messageQueueConfig.brokerUrl", "Required"}},
		{"repository with tag", func(s map[string]any) { s["checkpointImageRepository"] = "registry.example.com/ckpt:v1" }, nil, []string{"checkpointImageRepository", "without tag or digest"}},
		{"targetNode not a node name", func(s map[string]any) { s["targetNode"] = "Worker_2" }, nil, []string{"spec.targetNode", "node name"}},
		{"containerName not a name", func(s map[string]any) { s["containerName"] = "app!" }, nil, []string{"spec.containerName", "RFC 1123"}},
		{"negative timeout", func(s map[string]any) { s["timeouts"] = map[string]any{"checkpoint": "-5s"} }, nil, []string{"spec.timeouts.checkpoint", "positive duration"}},
		{"timeout not a duration", func(s map[string]any) { s["timeouts"] = map[string]any{"total": "soon"} }, nil, []string{"spec.timeouts.total", "positive duration"}},
		{"identity swap with Sequential", func(s map[string]any) { s["migrationStrategy"] = "Sequential" }, nil, []string{"identitySwapMode applies to ShadowPod migrations only"}},
		{"identity swap without broker", func(s map[string]any) { delete(s, "messageQueueConfig") }, nil, []string{"identitySwapMode needs spec.messageQueueConfig"}},
		{"management URL not http", func(s map[string]any) { mq(s)["managementUrl"] = "ftp://rabbitmq:15672" }, nil, []string{"managementUrl", "http://"}},
		{"empty credentials Secret name", func(s map[string]any) { mq(s)["credentialsSecretRef"] = map[string]any{"name": ""} }, nil, []string{"credentialsSecretRef.name"}},
		{"name too long", nil, func(u *unstructured.Unstructured) { u.SetName(strings.Repeat("m", 64)) }, []string{"metadata.name must be at most 63 characters"}},
		{"unknown field", func(s map[string]any) { s["sourcePodd"] = "typo" }, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := manifest(t, tc.mutate)
			if tc.meta != nil {
				tc.meta(u)
			}
			err := k8s.Create(context.Background(), u, client.FieldValidation("Strict"))
			wantInvalid(t, err, tc.want...)
		})
	}
}

func setPhase(t *testing.T, u *unstructured.Unstructured, phase string) {
	t.Helper()
	if err := unstructured.SetNestedField(u.Object, phase, "status", "phase"); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Status().Update(context.Background(), u); err != nil {
		t.Fatalf("setting status.phase=%s: %v", phase, err)
	}
}

func TestSpecIsImmutableOnceStarted(t *testing.T) {
	testenv.NeedsServices(t)
	ctx := context.Background()
	u := manifest(t, nil)
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	// While Pending, the spec may still be corrected.
	setPhase(t, u, "Pending")
	_ = unstructured.SetNestedField(u.Object, "worker-3", "spec", "targetNode")
	if err := k8s.Update(ctx, u); err != nil {
		t.Fatalf("changing a Pending migration was refused: %v", err)
	}
	setPhase(t, u, "Checkpointing")
	for _, change := range []struct {
		name string
		do   func(o map[string]any)
	}{
		{"sourcePod", func(o map[string]any) { _ = unstructured.SetNestedField(o, "consumer-1", "spec", "sourcePod") }},
		{"queueName", func(o map[string]any) {
			_ = unstructured.SetNestedField(o, "other", "spec", "messageQueueConfig", "queueName")
		}},
		{"add timeouts", func(o map[string]any) {
			_ = unstructured.SetNestedField(o, "5m", "spec", "timeouts", "total")
		}},
		{"drop targetNode", func(o map[string]any) { unstructured.RemoveNestedField(o, "spec", "targetNode") }},
		{"add handoff", func(o map[string]any) { _ = unstructured.SetNestedField(o, "Replay", "spec", "handoff") }},
		{"add checkpointEngine", func(o map[string]any) { _ = unstructured.SetNestedField(o, "Kubelet", "spec", "checkpointEngine") }},
		{"add memoryTechnique", func(o map[string]any) { _ = unstructured.SetNestedField(o, "PostCopy", "spec", "memoryTechnique") }},
		{"add otherContainers", func(o map[string]any) { _ = unstructured.SetNestedField(o, "StartFresh", "spec", "otherContainers") }},
	} {
		v := u.DeepCopy()
		change.do(v.Object)
		err := k8s.Update(ctx, v)
		if err == nil || !strings.Contains(err.Error(), "spec is immutable once the migration has started") {
			t.Errorf("%s changed after start: %v", change.name, err)
		}
	}
	abort := u.DeepCopy()
	_ = unstructured.SetNestedField(abort.Object, true, "spec", "abort")
	if err := k8s.Update(ctx, abort); err != nil {
		t.Fatalf("abort after start was refused: %v", err)
	}
	_ = unstructured.SetNestedField(abort.Object, false, "spec", "abort")
	if err := k8s.Update(ctx, abort); err == nil || !strings.Contains(err.Error(), "abort cannot be withdrawn") {
		t.Fatalf("withdrawing abort: %v", err)
	}
}

// wantInvalid fails the test unless the API server refused an object as
// invalid, with a message that says each of want.
func wantInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("the API server accepted it")
	}
	if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
		t.Fatalf("want Invalid, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message lacks %q:\n%v", w, err)
		}
	}
}
