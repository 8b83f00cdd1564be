package migration

import (
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func TestResolveHandoff(t *testing.T) {
	shadow, seq := v1alpha1.StrategyShadowPod, v1alpha1.StrategySequential
	runc, kubelet := v1alpha1.CheckpointEngineRunc, v1alpha1.CheckpointEngineKubelet
	replay, handoff := v1alpha1.HandoffReplay, v1alpha1.HandoffHandoff
	for _, c := range []struct {
		name string
		in   HandoffInputs
		got  v1alpha1.Handoff
		says string
	}{
		{"auto, Sequential held", HandoffInputs{Strategy: seq, Engine: runc, Broker: true, QueueType: "quorum", SDK: true}, handoff, "ended there"},
		{"auto, Sequential without a broker is held too", HandoffInputs{Strategy: seq, Engine: runc}, handoff, "ended there"},
		{"auto, Sequential with the kubelet", HandoffInputs{Strategy: seq, Engine: kubelet, Broker: true}, replay, "not dumped with the Runc engine"},
		{"auto, ShadowPod without the SDK on a classic queue", HandoffInputs{Want: v1alpha1.HandoffAuto, Strategy: shadow, Engine: runc, Broker: true, QueueType: "classic"}, handoff, "no ms2m SDK"},
		{"auto, ShadowPod with the SDK replays", HandoffInputs{Strategy: shadow, Engine: runc, Broker: true, QueueType: "classic", SDK: true}, replay, "fence"},
		{"auto, ShadowPod on a quorum queue replays", HandoffInputs{Strategy: shadow, Engine: runc, Broker: true, QueueType: "quorum"}, replay, "classic queues only; this queue is a quorum queue"},
		{"auto, ShadowPod, queue type unknown", HandoffInputs{Strategy: shadow, Engine: runc, Broker: true}, replay, "does not report"},
		{"auto, identity swap", HandoffInputs{Strategy: shadow, Engine: runc, Broker: true, QueueType: "classic", IdentitySwap: true}, replay, "identity swap"},
		{"replay asked", HandoffInputs{Want: replay, Strategy: seq, Engine: runc, Broker: true}, replay, "requested"},
		{"handoff asked, ShadowPod with the SDK", HandoffInputs{Want: handoff, Strategy: shadow, Engine: runc, Broker: true, QueueType: "classic", SDK: true}, handoff, "exclusive consumer"},
		{"handoff asked with the kubelet", HandoffInputs{Want: handoff, Strategy: shadow, Engine: kubelet, Broker: true, QueueType: "classic"}, "", "Handoff requested, but the source is not dumped with the Runc engine"},
		{"handoff asked on a stream", HandoffInputs{Want: handoff, Strategy: shadow, Engine: runc, Broker: true, QueueType: "stream"}, "", "this queue is a stream queue"},
		{"handoff asked, ShadowPod without a broker", HandoffInputs{Want: handoff, Strategy: shadow, Engine: runc}, "", "no stream to hand over"},
	} {
		got, why, fail := ResolveHandoff(c.in)
		if got != c.got || !strings.Contains(why+fail, c.says) || (got == "") != (fail != "") {
			t.Errorf("%s: %q why %q fail %q; want %q saying %q", c.name, got, why, fail, c.got, c.says)
		}
	}
}
