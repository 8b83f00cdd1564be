package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/cli"
	"github.com/ms2m/ms2m/internal/testenv"
)

var (
	k8s        client.Client
	kubeconfig string
)

func TestMain(m *testing.M) {
	code := testenv.MainWithAPIServer(m, func(env *envtest.Environment, cfg *rest.Config) error {
		var err error
		if k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()}); err != nil {
			return err
		}
		user, err := env.AddUser(envtest.User{Name: "sre", Groups: []string{"system:masters"}}, nil)
		if err != nil {
			return err
		}
		kc, err := user.KubeConfig()
		if err != nil {
			return err
		}
		kubeconfig = filepath.Join(os.TempDir(), fmt.Sprintf("ms2m-cli-%d.kubeconfig", os.Getpid()))
		return os.WriteFile(kubeconfig, kc, 0o600)
	})
	if kubeconfig != "" {
		os.Remove(kubeconfig)
	}
	os.Exit(code)
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := cli.NewCommand(&out)
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig, "-n", "default"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestMigratePodStatusAndCancel(t *testing.T) {
	testenv.NeedsServices(t)
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "consumer-0", Namespace: "default", Annotations: map[string]string{
		cli.AnnotationBrokerURL: "amqp://rabbit.default.svc:5672/", cli.AnnotationQueue: "orders",
		cli.AnnotationExchange: "orders", cli.AnnotationRoutingKey: "orders"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "consumer:1"}}}}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "pod", "consumer-0", "--to", "node-b", "--transfer", "Direct", "--timeout", "5m")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(out), "statefulmigration.migration.ms2m.io/"), " created")
	m := &v1alpha1.StatefulMigration{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, m); err != nil {
		t.Fatalf("created %q? %v (output %q)", name, err, out)
	}
	if m.Spec.SourcePod != "consumer-0" || m.Spec.TargetNode != "node-b" || m.Spec.TransferMode != v1alpha1.TransferDirect ||
		m.Spec.MessageQueueConfig == nil || m.Spec.MessageQueueConfig.QueueName != "orders" || m.Spec.Timeouts.Total.Duration.String() != "5m0s" {
		t.Fatalf("spec %+v", m.Spec)
	}
	if out, err := run(t, "status", name); err != nil || !strings.Contains(out, "consumer-0 -> -") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if out, err := run(t, "cancel", name); err != nil || !strings.Contains(out, "abort requested") {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil || !m.Spec.Abort {
		t.Fatalf("abort not set: %v", err)
	}
	if _, err := run(t, "pod", "nobody", "--to", "node-b"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("migrating a missing pod: %v", err)
	}
}
