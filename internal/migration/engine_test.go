package migration

import (
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

func TestResolveCheckpointEngine(t *testing.T) {
	runc := agentapi.CheckpointCapabilities{Runc: true, RuncReason: "the agent dumps with /usr/bin/runc", Kubelet: true}
	none := agentapi.CheckpointCapabilities{RuncReason: "no runc found on the host", Kubelet: true}
	runcOnly := agentapi.CheckpointCapabilities{Runc: true, RuncReason: "the agent dumps with /usr/bin/runc", KubeletReason: "not enabled for this install"}
	nothing := agentapi.CheckpointCapabilities{RuncReason: "no runc found on the host", KubeletReason: "not enabled for this install"}
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
		// An install without the kubelet engine (no nodes/checkpoint).
		{"kubelet asked where it is not enabled", kubelet, runcOnly, handler, "",
			"Kubelet requested, but node src's agent does not use the kubelet's checkpoint API: not enabled for this install"},
		{"auto to a checkpoint-image target without the kubelet engine", auto, runcOnly, image, "",
			"the target restores checkpoint images, which only the runtime's own checkpoint (the kubelet's API) produces, and node src's agent does not use the kubelet's checkpoint API"},
		{"auto with neither engine", auto, nothing, handler, "", "node src cannot dump with runc: no runc found on the host, and node src's agent does not use"},
		{"auto without the kubelet engine", auto, runcOnly, handler, want, "/usr/bin/runc"},
	} {
		engine, why, fail := ResolveCheckpointEngine(c.want, "src", c.caps, c.restore)
		if engine != c.engine || !strings.Contains(why+fail, c.says) || (engine == "") != (fail != "") {
			t.Errorf("%s: engine %q why %q fail %q; want %q saying %q", c.name, engine, why, fail, c.engine, c.says)
		}
	}
}
