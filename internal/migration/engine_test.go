package migration

import (
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

func TestResolveCheckpointEngine(t *testing.T) {
	runc := agentapi.CheckpointCapabilities{Runc: true, RuncReason: "the agent dumps with /usr/bin/runc"}
	none := agentapi.CheckpointCapabilities{RuncReason: "no runc found on the host"}
	handler, image := v1alpha1.RestoreRuntimeHandler, v1alpha1.RestoreCheckpointImage
	shadow, seq := v1alpha1.StrategyShadowPod, v1alpha1.StrategySequential
	auto, want, kubelet := v1alpha1.CheckpointEngineAuto, v1alpha1.CheckpointEngineRunc, v1alpha1.CheckpointEngineKubelet
	for _, c := range []struct {
		name     string
		want     v1alpha1.CheckpointEngine
		caps     agentapi.CheckpointCapabilities
		restore  v1alpha1.RestorePath
		strategy v1alpha1.MigrationStrategy
		engine   v1alpha1.CheckpointEngine
		hold     bool
		says     string
	}{
		{"auto, ShadowPod", auto, runc, handler, shadow, want, false, "/usr/bin/runc"},
		{"auto, Sequential holds", auto, runc, handler, seq, want, true, "held frozen"},
		{"empty is auto", "", runc, handler, seq, want, true, "held frozen"},
		{"auto without runc", auto, none, handler, seq, kubelet, false, "no runc found"},
		{"auto to a checkpoint-image target", auto, runc, image, seq, kubelet, false, "checkpoint images"},
		{"kubelet asked", kubelet, runc, handler, seq, kubelet, false, "requested"},
		{"runc asked without runc", want, none, handler, shadow, "", false, "Runc requested, but node src cannot dump with runc: no runc found"},
		{"runc asked, image target", want, runc, image, shadow, "", false, "Runc requested, but the target restores checkpoint images"},
	} {
		engine, hold, why, fail := ResolveCheckpointEngine(c.want, "src", c.caps, c.restore, c.strategy)
		if engine != c.engine || hold != c.hold || !strings.Contains(why+fail, c.says) || (engine == "") != (fail != "") {
			t.Errorf("%s: engine %q hold %v why %q fail %q; want %q hold %v saying %q", c.name, engine, hold, why, fail, c.engine, c.hold, c.says)
		}
	}
}
