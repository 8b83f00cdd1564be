package migration

import (
	"fmt"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

// MemoryInputs is what the memory technique is chosen from.
type MemoryInputs struct {
	Want     v1alpha1.MemoryTechnique
	Strategy v1alpha1.MigrationStrategy
	Engine   v1alpha1.CheckpointEngine
	Restore  v1alpha1.RestorePath
	// Handoff is the resolved handoff technique: PostCopy holds the source
	// frozen at its dump, which only Handoff expects.
	Handoff v1alpha1.Handoff
	// Source and Target are the nodes and what their agents report.
	Source, Target         string
	SourceCaps, TargetCaps agentapi.CheckpointCapabilities
}

// ResolveMemoryTechnique chooses how the container's memory reaches the
// target.
//
// PostCopy restores the target from a dump without memory pages and has
// it take each page as it touches it, the rest in the background: the
// processing gap no longer grows with the state. A Sequential source is
// dumped lazily and stays frozen, serving its pages, until the last one
// has gone; a ShadowPod source is dumped whole into memory and serves on
// while its pages are served from the dump, and is stopped only once the
// target has them all, so a broken page stream rolls back to it. It needs
// the Runc engine, ms2m's runtime handler on the target (a lazy restore)
// and both nodes able to (userfaultfd, CRIU, fs.pipe-max-size). Auto
// never takes it: until the last page arrives the state lives on two
// nodes.
//
// PreCopy needs the kernel to track dirty memory; ms2m does not implement
// it yet, which the refusal says after the node's own reason.
func ResolveMemoryTechnique(in MemoryInputs) (technique v1alpha1.MemoryTechnique, why, fail string) {
	switch in.Want {
	case v1alpha1.MemoryStopAndCopy:
		return v1alpha1.MemoryStopAndCopy, "memoryTechnique StopAndCopy requested", ""
	case v1alpha1.MemoryStream:
		if cannot := streamImpossible(in); cannot != "" {
			return "", "", "memoryTechnique Stream requested, but " + cannot
		}
		frozen := "frozen while its pages cross the link"
		if in.Strategy == v1alpha1.StrategySequential {
			frozen = "stopped at its checkpoint in any case"
		}
		return v1alpha1.MemoryStream, fmt.Sprintf("memoryTechnique Stream requested: %s sends its memory pages to a page server on %s as it dumps them (the source is %s); only the rest of the checkpoint is archived and transferred", in.Source, in.Target, frozen), ""
	case v1alpha1.MemoryPreCopy:
		if !in.SourceCaps.DirtyTracking {
			return "", "", fmt.Sprintf("memoryTechnique PreCopy requested, but source node %s cannot: %s", in.Source, in.SourceCaps.DirtyTrackingReason)
		}
		return "", "", fmt.Sprintf("memoryTechnique PreCopy requested: source node %s tracks dirty memory, but ms2m does not implement pre-copy yet; use StopAndCopy or PostCopy", in.Source)
	case v1alpha1.MemoryPostCopy:
		if cannot := postCopyImpossible(in); cannot != "" {
			return "", "", "memoryTechnique PostCopy requested, but " + cannot
		}
		from := "from " + in.Source + ", frozen until the last has gone"
		if in.Strategy != v1alpha1.StrategySequential {
			from = "from the source's dump in memory on " + in.Source + ", which serves on until the last has arrived"
		}
		return v1alpha1.MemoryPostCopy, fmt.Sprintf("memoryTechnique PostCopy requested: %s restores at once and takes the pages %s as the workload touches them", in.Target, from), ""
	}
	return v1alpha1.MemoryStopAndCopy, "Auto takes StopAndCopy: PostCopy leaves the workload's state split between two nodes until its last page arrives, so it is only used when asked for", ""
}

// streamImpossible: Stream needs a source dumped by the agent's own CRIU,
// whose pages it can redirect, and a target that runs CRIU's page server
// and restores what the agent staged.
func streamImpossible(in MemoryInputs) string {
	switch {
	case in.Engine != v1alpha1.CheckpointEngineRunc:
		return "only the Runc checkpoint engine sends its pages to a page server (checkpointEngine is " + string(in.Engine) + ")"
	case in.Restore != v1alpha1.RestoreRuntimeHandler:
		return "only ms2m's runtime handler restores from pages received apart from the archive, and " + in.Target + " restores checkpoint images"
	case !in.TargetCaps.Runc:
		return fmt.Sprintf("target node %s cannot run CRIU's page server: %s", in.Target, in.TargetCaps.RuncReason)
	}
	return ""
}

func postCopyImpossible(in MemoryInputs) string {
	switch {
	case in.Engine != v1alpha1.CheckpointEngineRunc:
		return "only the Runc checkpoint engine dumps without memory pages (checkpointEngine is " + string(in.Engine) + ")"
	case in.Restore != v1alpha1.RestoreRuntimeHandler:
		return "only ms2m's runtime handler restores lazily, and " + in.Target + " restores checkpoint images"
	case in.Strategy == v1alpha1.StrategySequential && in.Handoff != v1alpha1.HandoffHandoff:
		return "post-copy holds a Sequential source frozen at its dump, which the " + string(in.Handoff) + " handoff does not expect (use handoff Handoff or Auto)"
	case !in.SourceCaps.LazyPages:
		return fmt.Sprintf("source node %s cannot serve a lazy dump: %s", in.Source, in.SourceCaps.LazyPagesReason)
	case !in.TargetCaps.LazyPages:
		return fmt.Sprintf("target node %s cannot restore lazily: %s", in.Target, in.TargetCaps.LazyPagesReason)
	}
	return ""
}
