package migration

import (
	"fmt"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

// ResolveRestorePath picks how the target node restores the checkpoint,
// from what its agent reports, and says why; fail is a reason to refuse
// the migration ("" when a path exists). runtimeClass is the RuntimeClass
// of ms2m's runtime handler in the cluster ("" when none exists);
// sourceRuntimeClass is the source pod's.
//
// ms2m's runtime handler comes first wherever it is installed: the same
// path on every runtime release. A checkpoint image restored by the
// runtime itself is the fallback where the runtime still does that.
func ResolveRestorePath(target string, caps agentapi.RestoreCapabilities, runtimeClass, sourceRuntimeClass string) (path v1alpha1.RestorePath, why, fail string) {
	handler := caps.RuntimeHandler != "" && runtimeClass != ""
	if sourceRuntimeClass != "" && sourceRuntimeClass != runtimeClass {
		// The target runs under ms2m's RuntimeClass (or the checkpoint
		// image under the runtime's default): a source in another sandbox
		// (gVisor, Kata) cannot be restored there.
		return "", "", fmt.Sprintf("the source pod runs under RuntimeClass %q; ms2m restores only pods of the default runtime or of its own RuntimeClass", sourceRuntimeClass)
	}
	switch {
	case handler:
		return v1alpha1.RestoreRuntimeHandler, fmt.Sprintf("node %s: %s (RuntimeClass %s)", target, caps.RuntimeHandlerReason, runtimeClass), ""
	case caps.CheckpointImage:
		why = fmt.Sprintf("node %s: %s", target, caps.CheckpointImageReason)
		if caps.RuntimeHandler != "" {
			why += "; ms2m's runtime handler is installed there but the cluster has no RuntimeClass for it"
		}
		return v1alpha1.RestoreCheckpointImage, why, ""
	}
	missing := caps.RuntimeHandlerReason
	if caps.RuntimeHandler != "" {
		missing = "the cluster has no RuntimeClass for ms2m's runtime handler " + caps.RuntimeHandler
	}
	return "", "", fmt.Sprintf("node %s cannot restore a checkpoint: %s, and %s; install ms2m's runtime handler on the node (docs/runtime-handler.md)",
		target, caps.CheckpointImageReason, missing)
}
