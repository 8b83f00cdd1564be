package agent

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/engine"
)

// Options a node's runc CRIU configuration needs for pods that hold live
// TCP connections (an AMQP consumer does): without tcp-close the kubelet's
// checkpoint of a connected container fails, and a restore on another node
// (the pod IP changed) cannot re-create the connections.
var requiredCRIUOptions = []string{"tcp-close", "skip-in-flight"}

// Report says whether this node can take part in migrations and why not.
func (s *Server) Report(ctx context.Context) agentapi.ReadyReport {
	rep := agentapi.ReadyReport{Node: s.cfg.Node, DirectReceive: s.cfg.Runtime != nil, Restore: s.restoreCapabilities(ctx),
		Checkpoint: agentapi.CheckpointCapabilities{Runc: s.cfg.Runc != nil, RuncReason: s.cfg.RuncReason,
			Kubelet: s.cfg.Kubelet != nil, KubeletReason: s.cfg.KubeletReason,
			LazyPages: s.cfg.LazyPages.OK && s.cfg.Staging != nil, LazyPagesReason: s.cfg.LazyPages.Reason,
			DirtyTracking: s.cfg.DirtyTracking.OK, DirtyTrackingReason: s.cfg.DirtyTracking.Reason,
			FreezeHook: s.cfg.FreezeHook.OK, FreezeHookReason: s.cfg.FreezeHook.Reason}}
	conf, missing, err := checkCRIUConfig(s.cfg.CRIUConfig)
	rep.CRIUConfig = conf
	switch {
	case err != nil:
		rep.Problems = append(rep.Problems, fmt.Sprintf("CRIUConfigMissing: %v; create it with the lines %s", err, strings.Join(requiredCRIUOptions, ", ")))
	case len(missing) > 0:
		rep.Problems = append(rep.Problems, fmt.Sprintf("CRIUConfigIncomplete: %s lacks %s, needed to checkpoint and move pods with live TCP connections", s.cfg.CRIUConfig, strings.Join(missing, ", ")))
	}
	rep.Ready = len(rep.Problems) == 0
	return rep
}

// checkCRIUConfig reads a CRIU configuration file and lists the required
// options it lacks.
func checkCRIUConfig(path string) (content string, missing []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	opts, err := engine.ParseCRIUConfig(b)
	have := map[string]bool{}
	var lines []string
	for _, o := range opts {
		lines = append(lines, o.Line)
		have[o.Name] = true
	}
	for _, o := range requiredCRIUOptions {
		if !have[o] {
			missing = append(missing, o)
		}
	}
	return strings.Join(lines, "; "), missing, err
}
