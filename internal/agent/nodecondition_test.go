package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ms2m/ms2m/internal/agent"
	"github.com/ms2m/ms2m/internal/testenv"
)

// The agent says on its Node object, for a real API server, whether the
// node can take part in migrations, and follows a fix of the CRIU
// configuration.
func TestNodeConditionFollowsCRIUConfig(t *testing.T) {
	testenv.KubeAssets(t)
	env, cfg, err := testenv.StartAPIServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "runc.conf")
	srv, err := agent.NewServer(agent.Config{Node: "node-x", StateDir: t.TempDir(), CRIUConfig: conf})
	if err != nil {
		t.Fatal(err)
	}
	go srv.ReportNodeCondition(ctx, cs, 100*time.Millisecond)
	waitCondition(t, cs, corev1.ConditionFalse, "CRIUConfigMissing")
	if err := os.WriteFile(conf, []byte("tcp-close\nskip-in-flight\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cs, corev1.ConditionTrue, "AgentReady")
}

func waitCondition(t *testing.T, cs kubernetes.Interface, status corev1.ConditionStatus, reason string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last corev1.NodeCondition
	for time.Now().Before(deadline) {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), "node-x", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == agent.NodeConditionType {
				last = c
				if c.Status == status && c.Reason == reason && strings.TrimSpace(c.Message) != "" {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node condition %+v, want %s %s", last, status, reason)
}
