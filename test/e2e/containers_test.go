//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
)

// A pod with an init container and a second container beside its
// consumer, whose memory the migration leaves behind when asked to
// (otherContainers StartFresh): the consumer's memory moves (every message
// once), the init container runs again on the target and the second
// container starts fresh there, as the plan says; neither waits for a
// checkpoint that is not theirs.
func TestInitContainerAndSidecarStartFresh(t *testing.T) {
	res := run(t, scenario{kind: demo.KindDeployment, exactly: true, strategy: v1alpha1.StrategyShadowPod, sidecar: true,
		spec: v1alpha1.StatefulMigrationSpec{ContainerName: "consumer", TransferMode: v1alpha1.TransferDirect, OtherContainers: v1alpha1.OtherContainersStartFresh}})
	m := res.Migration
	p := m.Status.Plan
	if !slices.Equal(p.FreshContainers, []string{"init", "counter"}) || len(p.CheckpointedContainers) != 0 ||
		!strings.Contains(p.FreshContainersReason, "init container(s) init run again on the target; container(s) counter start fresh there") {
		t.Errorf("plan: checkpointed %v, fresh %v (%s)", p.CheckpointedContainers, p.FreshContainers, p.FreshContainersReason)
	}
	target := targetOf(t, m)
	initRanAgain(t, target)
	counter := peekCounter(t, target)
	if m.Status.StartTime == nil || !counter.Started.After(m.Status.StartTime.Time) {
		t.Errorf("the sidecar on the target started at %s, before the migration (%v): it was not started fresh", counter.Started, m.Status.StartTime)
	}
}

// Both containers of a pod move with their memory, in one cut (the
// default, otherContainers Checkpoint): the consumer loses and repeats no
// message, and the second container on the target is the source's process,
// started before the migration and counting on from its own memory. Under
// both strategies: a Sequential source is held, both containers frozen,
// until its end.
func TestTwoContainersMoveInOneCut(t *testing.T) {
	for _, tc := range []struct {
		kind     string
		strategy v1alpha1.MigrationStrategy
	}{
		{demo.KindDeployment, v1alpha1.StrategyShadowPod},
		{demo.KindStatefulSet, v1alpha1.StrategySequential},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			spec := v1alpha1.StatefulMigrationSpec{ContainerName: "consumer", TransferMode: v1alpha1.TransferDirect}
			if labCfg.RuntimeHandler == "" {
				// A runtime that restores checkpoint images restores one
				// container per image: refused in Pending, the pod untouched.
				failing(t, scenario{kind: tc.kind, sidecar: true, spec: spec}, v1alpha1.ReasonOtherContainers)
				return
			}
			res := run(t, scenario{kind: tc.kind, exactly: true, strategy: tc.strategy, sidecar: true, spec: spec})
			m := res.Migration
			p := m.Status.Plan
			if !slices.Equal(p.CheckpointedContainers, []string{"counter"}) || !slices.Equal(p.FreshContainers, []string{"init"}) ||
				!strings.Contains(p.FreshContainersReason, "container(s) counter are checkpointed with consumer in one cut") {
				t.Errorf("plan: checkpointed %v, fresh %v (%s)", p.CheckpointedContainers, p.FreshContainers, p.FreshContainersReason)
			}
			target := targetOf(t, m)
			initRanAgain(t, target)
			counter := peekCounter(t, target)
			start := m.Status.StartTime.Time
			if !counter.Started.Before(start) {
				t.Fatalf("the second container on the target started at %s, after the migration began (%s): its memory did not move", counter.Started, start)
			}
			// It ticks ten times a second from its start; a process that
			// lost its memory would count from zero.
			if ran := start.Sub(counter.Started); counter.Ticks < int64(ran/time.Second)*5 {
				t.Errorf("the second container counted %d ticks in the %s it ran before the migration: its count did not move", counter.Ticks, ran.Round(time.Second))
			}
			if !strings.HasPrefix(counter.Boot, m.Spec.SourcePod+"-") {
				t.Errorf("the second container on the target is incarnation %s, not the source pod %s's process", counter.Boot, m.Spec.SourcePod)
			}
		})
	}
}

func targetOf(t *testing.T, m *v1alpha1.StatefulMigration) *corev1.Pod {
	t.Helper()
	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	return target
}

func initRanAgain(t *testing.T, target *corev1.Pod) {
	t.Helper()
	for _, s := range target.Status.InitContainerStatuses {
		if s.Name == "init" && (s.State.Terminated == nil || s.State.Terminated.ExitCode != 0) {
			t.Errorf("the init container on the target: %+v", s.State)
		}
	}
}

type counterState struct {
	Started time.Time `json:"started"`
	Ticks   int64     `json:"ticks"`
	Boot    string    `json:"boot"`
}

func peekCounter(t *testing.T, target *corev1.Pod) counterState {
	t.Helper()
	var counter counterState
	resp, err := http.Get(fmt.Sprintf("http://%s:8081/peek", target.Status.PodIP))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&counter); err != nil {
		t.Fatal(err)
	}
	return counter
}
