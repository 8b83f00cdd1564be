package migration

import (
	"fmt"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

// ResolveCheckpointEngine decides how the source node dumps the container
// and whether the source is held frozen at its checkpoint.
//   - Runc needs the source's agent to run the runtime's runc, and a target
//     restoring through ms2m's runtime handler: its archive holds CRIU's
//     images and the root file system's changes, not a checkpoint image a
//     runtime restores by itself.
//   - Auto takes Runc where it can (CRIU's freeze only), else Kubelet.
//   - A Sequential source dumped with runc is held: it applies and
//     acknowledges nothing after its checkpoint, so its queue keeps, in
//     order, everything the checkpoint lacks. A ShadowPod source serves on.
func ResolveCheckpointEngine(want v1alpha1.CheckpointEngine, source string, caps agentapi.CheckpointCapabilities,
	restore v1alpha1.RestorePath, strategy v1alpha1.MigrationStrategy) (engine v1alpha1.CheckpointEngine, hold bool, why, fail string) {
	var cannot string
	switch {
	case !caps.Runc:
		cannot = fmt.Sprintf("node %s cannot dump with runc: %s", source, caps.RuncReason)
	case restore != v1alpha1.RestoreRuntimeHandler:
		cannot = "the target restores checkpoint images, which only the runtime's own checkpoint (the kubelet's API) produces"
	}
	switch {
	case want == v1alpha1.CheckpointEngineKubelet:
		return v1alpha1.CheckpointEngineKubelet, false, "checkpointEngine Kubelet requested", ""
	case want == v1alpha1.CheckpointEngineRunc && cannot != "":
		return "", false, "", "checkpointEngine Runc requested, but " + cannot
	case cannot != "":
		return v1alpha1.CheckpointEngineKubelet, false, cannot + ": the kubelet's checkpoint API dumps it", ""
	}
	why = fmt.Sprintf("node %s: %s", source, caps.RuncReason)
	if strategy == v1alpha1.StrategySequential {
		why += "; the source is held frozen at its checkpoint and stopped from there: its queue keeps everything the checkpoint lacks, so no replay is needed"
		return v1alpha1.CheckpointEngineRunc, true, why, ""
	}
	return v1alpha1.CheckpointEngineRunc, false, why, ""
}
