//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
)

// A Deployment's pod moved with PostCopy: the source is dumped whole into
// memory and serves on; the target restores without its lazy pages and
// takes them from the source's dump; the source stops only after the last.
func TestShadowPodPostCopy(t *testing.T) {
	spec := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryPostCopy}
	if labCfg.RuntimeHandler == "" {
		failing(t, scenario{kind: demo.KindDeployment, spec: spec}, v1alpha1.ReasonNoMemoryTechnique)
		return
	}
	res := run(t, scenario{kind: demo.KindDeployment, exactly: true, strategy: v1alpha1.StrategyShadowPod, state: "64Mi", spec: spec})
	st := &res.Migration.Status
	if st.Plan.MemoryTechnique != v1alpha1.MemoryPostCopy || st.Plan.HoldSource {
		t.Fatalf("memory technique %q (%s), source held %v: want PostCopy from a source that serves on", st.Plan.MemoryTechnique, st.Plan.MemoryTechniqueReason, st.Plan.HoldSource)
	}
	pagesCameAfter(t, st)
	if res.Measures.Downtime != 0 {
		t.Errorf("service downtime %s, want none: the source serves until the target has every page", res.Measures.Downtime)
	}
}

// The link between the nodes is cut (packets dropped, no reset) once the
// target restores and takes its pages from the source: the page stream
// breaks, the migration rolls back, and the source, which never stopped
// serving, has applied every message exactly once.
func TestPostCopyLinkCutRollsBack(t *testing.T) {
	if labCfg.RuntimeHandler == "" {
		t.Skip("post-copy needs ms2m's runtime handler on the target")
	}
	cut := newLinkCut(t)
	spec := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryPostCopy}
	failing(t, scenario{kind: demo.KindDeployment, spec: spec, state: "512Mi",
		during: func(ctx context.Context, m *v1alpha1.StatefulMigration) {
			switch {
			case m.Status.Phase == v1alpha1.PhaseRestoring:
				cut.start(ctx)
			case m.Status.FailureReason != "":
				cut.end()
			}
		}}, v1alpha1.ReasonPagesLost)
	if !cut.happened() {
		t.Fatal("the link was never cut")
	}
}

// agentIP is the pod IP of the ms2m agent on node.
func agentIP(ctx context.Context, t *testing.T, node string) string {
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace("ms2m-system")); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node && strings.HasPrefix(p.Name, "ms2m-agent-") && p.Status.PodIP != "" {
			return p.Status.PodIP
		}
	}
	t.Fatalf("no agent pod with an IP on %s", node)
	return ""
}

// The target's lazy-pages daemon is killed while the target restores:
// its memory can no longer all come, the migration rolls back, and the
// source served on, every message applied once.
func TestPostCopyLazyPagesDaemonKilledRollsBack(t *testing.T) {
	if labCfg.RuntimeHandler == "" {
		t.Skip("post-copy needs ms2m's runtime handler on the target")
	}
	var killed bool
	spec := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryPostCopy}
	failing(t, scenario{kind: demo.KindDeployment, spec: spec, state: "512Mi",
		during: func(ctx context.Context, m *v1alpha1.StatefulMigration) {
			if killed || m.Status.Phase != v1alpha1.PhaseRestoring {
				return
			}
			// The lab runs one migration at a time: the only daemon is
			// this migration's, started by node-b's agent.
			out, err := exec.Command("pkill", "-KILL", "-f", "criu lazy-pages").CombinedOutput()
			killed = err == nil
			t.Logf("%s: killed the lazy-pages daemon (%v %s)", time.Now().Format("15:04:05.000"), err, out)
		}}, v1alpha1.ReasonPagesLost)
	if !killed {
		t.Fatal("no lazy-pages daemon was killed")
	}
}
