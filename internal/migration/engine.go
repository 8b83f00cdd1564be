package migration

import (
	"fmt"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

// ResolveCheckpointEngine decides how the source node dumps the container
// (whether the source is also held frozen at its checkpoint is the handoff
// technique's choice: ResolveHandoff).
//   - Runc needs the source's agent to run the runtime's runc, and a target
//     restoring through ms2m's runtime handler: its archive holds CRIU's
//     images and the root file system's changes, not a checkpoint image a
//     runtime restores by itself.
//   - Auto takes Runc where it can (CRIU's freeze only), else Kubelet.
func ResolveCheckpointEngine(want v1alpha1.CheckpointEngine, source string, caps agentapi.CheckpointCapabilities,
	restore v1alpha1.RestorePath) (engine v1alpha1.CheckpointEngine, why, fail string) {
	var cannot string
	switch {
	case !caps.Runc:
		cannot = fmt.Sprintf("node %s cannot dump with runc: %s", source, caps.RuncReason)
	case restore != v1alpha1.RestoreRuntimeHandler:
		cannot = "the target restores checkpoint images, which only the runtime's own checkpoint (the kubelet's API) produces"
	}
	noKubelet := ""
	if !caps.Kubelet {
		noKubelet = fmt.Sprintf("node %s's agent does not use the kubelet's checkpoint API: %s", source, caps.KubeletReason)
	}
	switch {
	case want == v1alpha1.CheckpointEngineKubelet && noKubelet != "":
		return "", "", "checkpointEngine Kubelet requested, but " + noKubelet
	case want == v1alpha1.CheckpointEngineKubelet:
		return v1alpha1.CheckpointEngineKubelet, "checkpointEngine Kubelet requested", ""
	case want == v1alpha1.CheckpointEngineRunc && cannot != "":
		return "", "", "checkpointEngine Runc requested, but " + cannot
	case cannot != "" && noKubelet != "":
		return "", "", cannot + ", and " + noKubelet
	case cannot != "":
		return v1alpha1.CheckpointEngineKubelet, cannot + ": the kubelet's checkpoint API dumps it", ""
	}
	return v1alpha1.CheckpointEngineRunc, fmt.Sprintf("node %s: %s", source, caps.RuncReason), ""
}
