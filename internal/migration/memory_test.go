package migration

import (
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

func TestResolveMemoryTechnique(t *testing.T) {
	able := agentapi.CheckpointCapabilities{Runc: true, LazyPages: true}
	postCopy := MemoryInputs{Want: v1alpha1.MemoryPostCopy, Strategy: v1alpha1.StrategySequential, Engine: v1alpha1.CheckpointEngineRunc,
		Restore: v1alpha1.RestoreRuntimeHandler, Handoff: v1alpha1.HandoffHandoff, Source: "node-a", Target: "node-b", SourceCaps: able, TargetCaps: able}
	with := func(f func(*MemoryInputs)) MemoryInputs {
		in := postCopy
		f(&in)
		return in
	}
	cases := []struct {
		name    string
		in      MemoryInputs
		want    v1alpha1.MemoryTechnique
		failHas string
		whyHas  string
	}{
		{"post-copy where both nodes can", postCopy, v1alpha1.MemoryPostCopy, "", "node-b restores at once"},
		{"auto never takes post-copy", with(func(i *MemoryInputs) { i.Want = v1alpha1.MemoryAuto }), v1alpha1.MemoryStopAndCopy, "", "only used when asked for"},
		{"empty is auto", with(func(i *MemoryInputs) { i.Want = "" }), v1alpha1.MemoryStopAndCopy, "", "Auto"},
		{"stop-and-copy", with(func(i *MemoryInputs) { i.Want = v1alpha1.MemoryStopAndCopy }), v1alpha1.MemoryStopAndCopy, "", "requested"},
		{"stream from a Sequential source", with(func(i *MemoryInputs) { i.Want, i.Handoff = v1alpha1.MemoryStream, v1alpha1.HandoffReplay }),
			v1alpha1.MemoryStream, "", "stopped at its checkpoint in any case"},
		{"stream from a ShadowPod source freezes it across the link", with(func(i *MemoryInputs) { i.Want, i.Strategy = v1alpha1.MemoryStream, v1alpha1.StrategyShadowPod }),
			v1alpha1.MemoryStream, "", "frozen while its pages cross the link"},
		{"stream needs no lazy pages", with(func(i *MemoryInputs) {
			i.Want, i.SourceCaps, i.TargetCaps = v1alpha1.MemoryStream, agentapi.CheckpointCapabilities{Runc: true}, agentapi.CheckpointCapabilities{Runc: true}
		}), v1alpha1.MemoryStream, "", "page server on node-b"},
		{"the kubelet cannot stream", with(func(i *MemoryInputs) { i.Want, i.Engine = v1alpha1.MemoryStream, v1alpha1.CheckpointEngineKubelet }),
			"", "Stream requested, but only the Runc checkpoint engine", ""},
		{"stream into a checkpoint image", with(func(i *MemoryInputs) { i.Want, i.Restore = v1alpha1.MemoryStream, v1alpha1.RestoreCheckpointImage }),
			"", "restores checkpoint images", ""},
		{"stream to a node without CRIU", with(func(i *MemoryInputs) {
			i.Want, i.TargetCaps = v1alpha1.MemoryStream, agentapi.CheckpointCapabilities{RuncReason: "no criu on the host"}
		}), "", "target node node-b cannot run CRIU's page server: no criu on the host", ""},
		{"a ShadowPod source serves on while its dump serves the pages", with(func(i *MemoryInputs) { i.Strategy = v1alpha1.StrategyShadowPod }),
			v1alpha1.MemoryPostCopy, "", "serves on until the last has arrived"},
		{"a replayed ShadowPod source needs no hold", with(func(i *MemoryInputs) {
			i.Strategy, i.Handoff = v1alpha1.StrategyShadowPod, v1alpha1.HandoffReplay
		}), v1alpha1.MemoryPostCopy, "", "from the source's dump"},
		{"the kubelet cannot dump lazily", with(func(i *MemoryInputs) { i.Engine = v1alpha1.CheckpointEngineKubelet }), "", "checkpointEngine is Kubelet", ""},
		{"checkpoint images restore eagerly", with(func(i *MemoryInputs) { i.Restore = v1alpha1.RestoreCheckpointImage }), "", "restores checkpoint images", ""},
		{"a replayed Sequential source is not held", with(func(i *MemoryInputs) { i.Handoff = v1alpha1.HandoffReplay }), "", "handoff Handoff or Auto", ""},
		{"a source node without lazy pages", with(func(i *MemoryInputs) {
			i.SourceCaps = agentapi.CheckpointCapabilities{Runc: true, LazyPagesReason: "fs.pipe-max-size is 1048576"}
		}), "", "source node node-a cannot serve a lazy dump: fs.pipe-max-size", ""},
		{"a target node without lazy pages", with(func(i *MemoryInputs) {
			i.TargetCaps = agentapi.CheckpointCapabilities{LazyPagesReason: "no runc engine"}
		}), "", "target node node-b cannot restore lazily: no runc engine", ""},
		{"pre-copy without dirty tracking says the node's reason", with(func(i *MemoryInputs) {
			i.Want = v1alpha1.MemoryPreCopy
			i.SourceCaps.DirtyTrackingReason = "no soft-dirty bits"
		}), "", "node-a cannot: no soft-dirty bits", ""},
		{"pre-copy is not implemented", with(func(i *MemoryInputs) {
			i.Want = v1alpha1.MemoryPreCopy
			i.SourceCaps.DirtyTracking = true
		}), "", "does not implement pre-copy yet", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why, fail := ResolveMemoryTechnique(c.in)
			if got != c.want {
				t.Errorf("technique %q, want %q (why %q, fail %q)", got, c.want, why, fail)
			}
			if c.failHas != "" && !strings.Contains(fail, c.failHas) {
				t.Errorf("refusal %q does not say %q", fail, c.failHas)
			}
			if c.failHas == "" && fail != "" {
				t.Errorf("refused: %s", fail)
			}
			if c.whyHas != "" && !strings.Contains(why, c.whyHas) {
				t.Errorf("reason %q does not say %q", why, c.whyHas)
			}
		})
	}
}
