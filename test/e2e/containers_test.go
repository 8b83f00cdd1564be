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

// A pod with an init container and a sidecar beside its consumer: the
// consumer's memory moves (every message once), the init container runs
// again on the target and the sidecar starts fresh there, as the plan
// says; neither waits for a checkpoint that is not theirs.
func TestInitContainerAndSidecarStartFresh(t *testing.T) {
	res := run(t, scenario{kind: demo.KindDeployment, exactly: true, strategy: v1alpha1.StrategyShadowPod, sidecar: true,
		spec: v1alpha1.StatefulMigrationSpec{ContainerName: "consumer", TransferMode: v1alpha1.TransferDirect}})
	m := res.Migration
	p := m.Status.Plan
	if !slices.Equal(p.FreshContainers, []string{"init", "counter"}) ||
		!strings.Contains(p.FreshContainersReason, "init container(s) init run again on the target; container(s) counter start fresh there") {
		t.Errorf("plan: fresh %v (%s)", p.FreshContainers, p.FreshContainersReason)
	}
	target := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, target); err != nil {
		t.Fatal(err)
	}
	for _, s := range target.Status.InitContainerStatuses {
		if s.Name == "init" && (s.State.Terminated == nil || s.State.Terminated.ExitCode != 0) {
			t.Errorf("the init container on the target: %+v", s.State)
		}
	}
	var counter struct {
		Started time.Time `json:"started"`
	}
	resp, err := http.Get(fmt.Sprintf("http://%s:8081/peek", target.Status.PodIP))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&counter); err != nil {
		t.Fatal(err)
	}
	if m.Status.StartTime == nil || !counter.Started.After(m.Status.StartTime.Time) {
		t.Errorf("the sidecar on the target started at %s, before the migration (%v): it was not started fresh", counter.Started, m.Status.StartTime)
	}
}
