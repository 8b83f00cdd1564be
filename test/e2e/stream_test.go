//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
)

// Stream: the source's CRIU sends the 64 MiB of state to node-b's page
// server as it dumps it, and only the rest of the checkpoint (some tens of
// KB) goes into the archive; the state arrives whole and the stream
// exactly once. Where the target restores checkpoint images (containerd
// 2.1 without ms2m's runtime handler) it is refused in Pending.
func TestSequentialStatefulSetStream(t *testing.T) {
	spec := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryStream}
	if labCfg.RuntimeHandler == "" {
		failing(t, scenario{kind: demo.KindStatefulSet, spec: spec}, v1alpha1.ReasonNoMemoryTechnique)
		return
	}
	res := run(t, scenario{kind: demo.KindStatefulSet, exactly: true, strategy: v1alpha1.StrategySequential, state: "64Mi", spec: spec})
	st := &res.Migration.Status
	if st.Plan.MemoryTechnique != v1alpha1.MemoryStream {
		t.Fatalf("memory technique %q (%s), want Stream", st.Plan.MemoryTechnique, st.Plan.MemoryTechniqueReason)
	}
	if st.Transfer == nil || st.Transfer.PageBytes < 64<<20 {
		t.Errorf("the 64 MiB of state did not go to the page server: %+v", st.Transfer)
	}
	if st.Checkpoint == nil || st.Checkpoint.SizeBytes > 1<<20 {
		t.Errorf("the archive holds the pages too: %+v", st.Checkpoint)
	}
}

// The target's page server is killed while the source's pages stream to
// it: the dump fails, CRIU gives the source back running, and the
// migration rolls back with every message applied once.
func TestStreamPageServerKilledRollsBack(t *testing.T) {
	if labCfg.RuntimeHandler == "" {
		t.Skip("Stream needs ms2m's runtime handler on the target")
	}
	var killed bool
	spec := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryStream}
	failing(t, scenario{kind: demo.KindDeployment, spec: spec, state: "512Mi",
		during: func(ctx context.Context, m *v1alpha1.StatefulMigration) {
			if killed || m.Status.Phase != v1alpha1.PhaseCheckpointing {
				return
			}
			// The lab runs one migration at a time: the only page
			// server is this migration's, started by node-b's agent.
			out, err := exec.Command("pkill", "-KILL", "-f", "criu page-server").CombinedOutput()
			killed = err == nil
			if killed {
				t.Logf("%s: killed the page server (%s)", time.Now().Format("15:04:05.000"), out)
			}
		}}, v1alpha1.ReasonCheckpointFailed)
	if !killed {
		t.Fatal("no page server was killed")
	}
}
