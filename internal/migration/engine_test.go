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
	auto, want, kubelet := v1alpha1.CheckpointEngineAuto, v1alpha1.CheckpointEngineRunc, v1alpha1.CheckpointEngineKubelet
	for _, c := range []struct {
		name    string
		want    v1alpha1.CheckpointEngine
		caps    agentapi.CheckpointCapabilities
		restore v1alpha1.RestorePath
		engine  v1alpha1.CheckpointEngine
		says    string
	}{
		{"auto", auto, runc, handler, want, "/usr/bin/runc"},
		{"empty is auto", "", runc, handler, want, "/usr/bin/runc"},
		{"auto without runc", auto, none, handler, kubelet, "no runc found"},
		{"auto to a checkpoint-image target", auto, runc, image, kubelet, "checkpoint images"},
		{"kubelet asked", kubelet, runc, handler, kubelet, "requested"},
		{"runc asked without runc", want, none, handler, "", "Runc requested, but node src cannot dump with runc: no runc found"},
		{"runc asked, image target", want, runc, image, "", "Runc requested, but the target restores checkpoint images"},
	} {
		engine, why, fail := ResolveCheckpointEngine(c.want, "src", c.caps, c.restore)
		if engine != c.engine || !strings.Contains(why+fail, c.says) || (engine == "") != (fail != "") {
			t.Errorf("%s: engine %q why %q fail %q; want %q saying %q", c.name, engine, why, fail, c.engine, c.says)
		}
	}
}
