package agent

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// NodeConditionType is the node condition an agent keeps up to date, so
// that `kubectl describe node` says whether the node can take part in
// migrations, and why not.
const NodeConditionType corev1.NodeConditionType = "MigrationReady"

// ReportNodeCondition writes the agent's report as the node's
// MigrationReady condition now and every interval until ctx ends.
func (s *Server) ReportNodeCondition(ctx context.Context, cs kubernetes.Interface, interval time.Duration) {
	last := ""
	for {
		rep := s.Report(ctx)
		cond := corev1.NodeCondition{Type: NodeConditionType, Status: corev1.ConditionTrue, Reason: "AgentReady",
			Message: "ms2m agent ready: CRIU configured (" + rep.CRIUConfig + "); dumps " + dumpSummary(rep.Checkpoint) + "; restores " + restoreSummary(rep.Restore), LastHeartbeatTime: metav1.Now()}
		if !rep.Ready {
			cond.Status, cond.Reason = corev1.ConditionFalse, problemReason(rep.Problems)
			cond.Message = strings.Join(rep.Problems, "; ")
		}
		if key := string(cond.Status) + cond.Message; key != last {
			cond.LastTransitionTime = cond.LastHeartbeatTime
			patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
			if _, err := cs.CoreV1().Nodes().PatchStatus(ctx, s.cfg.Node, patch); err != nil {
				s.cfg.Log.Warn("node condition", "error", err)
			} else {
				last = key
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// dumpSummary says how the node dumps containers, for people.
func dumpSummary(cc agentapi.CheckpointCapabilities) string {
	if cc.Runc {
		hook := "freeze hook: " + cc.FreezeHookReason
		if cc.FreezeHook {
			hook = "freeze hook installed: " + cc.FreezeHookReason
		}
		return "with runc: " + cc.RuncReason + "; " + hook
	}
	return "through the kubelet's checkpoint API only (runc engine unavailable: " + cc.RuncReason + ")"
}

// restoreSummary says how the node restores checkpoints, for people.
func restoreSummary(rc agentapi.RestoreCapabilities) string {
	switch {
	case rc.RuntimeHandler != "":
		return "through " + rc.RuntimeHandlerReason
	case rc.CheckpointImage:
		return "checkpoint images: " + rc.CheckpointImageReason
	}
	return "nothing: " + rc.CheckpointImageReason + ", and " + rc.RuntimeHandlerReason
}

// problemReason is the CamelCase word each problem starts with.
func problemReason(problems []string) string {
	if len(problems) == 0 {
		return "AgentNotReady"
	}
	reason, _, _ := strings.Cut(problems[0], ":")
	return reason
}
