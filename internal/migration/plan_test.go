package migration

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

// A node with everything: ms2m's runtime handler, runc and lazy pages.
var ableNode = agentapi.ReadyReport{Ready: true,
	Restore:    agentapi.RestoreCapabilities{RuntimeHandler: "ms2m", RuntimeHandlerReason: "ms2m runtime handler installed"},
	Checkpoint: agentapi.CheckpointCapabilities{Runc: true, RuncReason: "runc 1.5.3, CRIU 4.2", LazyPages: true, LazyPagesReason: "uffd", Kubelet: true},
}

func planInputs(f func(*PlanInputs)) PlanInputs {
	in := PlanInputs{Spec: &v1alpha1.StatefulMigrationSpec{}, OwnerKind: "Deployment", Source: "node-a", Target: "node-b",
		SourceAgent: ableNode, TargetAgent: ableNode, RuntimeClass: "ms2m", Repository: "registry:5000/ckpt",
		Broker: true, QueueType: "classic", SDK: true}
	if f != nil {
		f(&in)
	}
	return in
}

func TestResolvePlan(t *testing.T) {
	cases := []struct {
		name string
		in   PlanInputs
		// want holds the choices checked (empty fields are not); refused
		// is the reason of a refusal and says holds part of its message.
		want          v1alpha1.MigrationPlan
		refused, says string
	}{
		{name: "defaults on able nodes: a shadow, the runc engine, replay with the SDK",
			in: planInputs(nil),
			want: v1alpha1.MigrationPlan{Strategy: v1alpha1.StrategyShadowPod, RestorePath: v1alpha1.RestoreRuntimeHandler,
				CheckpointEngine: v1alpha1.CheckpointEngineRunc, TransferMode: v1alpha1.TransferRegistry, ReplayMode: v1alpha1.ReplayCutoff,
				Handoff: v1alpha1.HandoffReplay, MemoryTechnique: v1alpha1.MemoryStopAndCopy}},
		{name: "a StatefulSet pod moves Sequentially and is held",
			in:   planInputs(func(i *PlanInputs) { i.OwnerKind = "StatefulSet" }),
			want: v1alpha1.MigrationPlan{Strategy: v1alpha1.StrategySequential, Handoff: v1alpha1.HandoffHandoff, HoldSource: true}},
		{name: "a target restoring checkpoint images makes the kubelet dump, which cannot hold",
			in: planInputs(func(i *PlanInputs) {
				i.OwnerKind = "StatefulSet"
				i.TargetAgent.Restore = agentapi.RestoreCapabilities{CheckpointImage: true, CheckpointImageReason: "containerd 2.1.9"}
			}),
			want: v1alpha1.MigrationPlan{RestorePath: v1alpha1.RestoreCheckpointImage, CheckpointEngine: v1alpha1.CheckpointEngineKubelet,
				Handoff: v1alpha1.HandoffReplay}},
		{name: "post-copy asked where the engine fell back to the kubelet names the engine",
			in: planInputs(func(i *PlanInputs) {
				i.OwnerKind = "StatefulSet"
				i.Spec.MemoryTechnique = v1alpha1.MemoryPostCopy
				i.SourceAgent.Checkpoint = agentapi.CheckpointCapabilities{RuncReason: "no runc binary", Kubelet: true}
			}),
			refused: v1alpha1.ReasonNoMemoryTechnique, says: "Kubelet"},
		{name: "post-copy on a Sequential migration with able nodes",
			in: planInputs(func(i *PlanInputs) {
				i.OwnerKind = "StatefulSet"
				i.Spec.MemoryTechnique = v1alpha1.MemoryPostCopy
				i.Spec.TransferMode = v1alpha1.TransferDirect
			}),
			want: v1alpha1.MigrationPlan{MemoryTechnique: v1alpha1.MemoryPostCopy, TransferMode: v1alpha1.TransferDirect, HoldSource: true}},
		{name: "no restore path is refused before anything else",
			in: planInputs(func(i *PlanInputs) {
				i.TargetAgent.Restore = agentapi.RestoreCapabilities{CheckpointImageReason: "containerd 2.4 removed it", RuntimeHandlerReason: "not installed"}
				i.Repository = ""
			}),
			refused: v1alpha1.ReasonNoRestorePath, says: "containerd 2.4 removed it"},
		{name: "Registry transfer without a repository",
			in:      planInputs(func(i *PlanInputs) { i.Repository = "" }),
			refused: v1alpha1.ReasonNoRepository, says: "spec.checkpointImageRepository"},
		{name: "Direct transfer needs no repository",
			in: planInputs(func(i *PlanInputs) {
				i.Repository = ""
				i.Spec.TransferMode = v1alpha1.TransferDirect
			}),
			want: v1alpha1.MigrationPlan{TransferMode: v1alpha1.TransferDirect}},
		{name: "Runc asked of a node that cannot",
			in: planInputs(func(i *PlanInputs) {
				i.Spec.CheckpointEngine = v1alpha1.CheckpointEngineRunc
				i.SourceAgent.Checkpoint = agentapi.CheckpointCapabilities{RuncReason: "no runc binary", Kubelet: true}
			}),
			refused: v1alpha1.ReasonNoCheckpointEngine, says: "no runc binary"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, refusal := ResolvePlan(c.in)
			if c.refused != "" {
				if refusal == nil {
					t.Fatalf("not refused: %+v", got)
				}
				if refusal.Reason != c.refused || !strings.Contains(refusal.Message, c.says) {
					t.Fatalf("refused %s: %q; want %s saying %q", refusal.Reason, refusal.Message, c.refused, c.says)
				}
				return
			}
			if refusal != nil {
				t.Fatalf("refused %s: %s", refusal.Reason, refusal.Message)
			}
			checkChosen(t, got, c.want)
			// Every choice made carries the reason it was made.
			v := reflect.ValueOf(got)
			for i := 0; i < v.NumField(); i++ {
				name := v.Type().Field(i).Name
				if strings.HasSuffix(name, "Reason") && v.Field(i).String() == "" {
					t.Errorf("%s is empty in %+v", name, got)
				}
			}
		})
	}
}

// checkChosen compares the non-zero fields of want with got.
func checkChosen(t *testing.T, got, want v1alpha1.MigrationPlan) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < w.NumField(); i++ {
		if !w.Field(i).IsZero() && !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("%s = %v, want %v (%+v)", w.Type().Field(i).Name, g.Field(i), w.Field(i), got)
		}
	}
}

// The reason a default was taken says it was the default, so that a user
// reading the plan can tell it from what the spec asked for.
func TestPlanSaysWhichChoicesWereDefaults(t *testing.T) {
	got, refusal := ResolvePlan(planInputs(nil))
	if refusal != nil {
		t.Fatal(refusal.Message)
	}
	if !strings.Contains(got.TransferModeReason, "default") || !strings.Contains(got.ReplayModeReason, "default") {
		t.Errorf("transfer %q, replay %q: want both to say they are defaults", got.TransferModeReason, got.ReplayModeReason)
	}
	got, _ = ResolvePlan(planInputs(func(i *PlanInputs) {
		i.Spec.TransferMode, i.Spec.ReplayMode = v1alpha1.TransferRegistry, v1alpha1.ReplayDrain
	}))
	if !strings.Contains(got.TransferModeReason, "spec.transferMode") || !strings.Contains(got.ReplayModeReason, "spec.replayMode") {
		t.Errorf("transfer %q, replay %q: want both to name the spec field", got.TransferModeReason, got.ReplayModeReason)
	}
}
