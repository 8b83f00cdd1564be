package render

import (
	"github.com/ms2m/ms2m/internal/staging"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func sourcePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "consumer-0", Namespace: "shop",
			Labels:      map[string]string{"app": "consumer", "controller-revision-hash": "abc", "statefulset.kubernetes.io/pod-name": "consumer-0"},
			Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: "{}", "team": "a"}},
		Spec: corev1.PodSpec{
			NodeName: "node-a", NodeSelector: map[string]string{corev1.LabelHostname: "node-a", "disk": "ssd"}, Hostname: "consumer-0", Subdomain: "consumer", RestartPolicy: corev1.RestartPolicyAlways,
			Containers: []corev1.Container{
				{Name: "app", Image: "registry/consumer:1", VolumeMounts: []corev1.VolumeMount{
					{Name: "kube-api-access-x1y2z", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"},
					{Name: "podinfo", MountPath: "/etc/podinfo"}}},
				{Name: "sidecar", Image: "registry/sidecar:1"},
			},
			Volumes: []corev1.Volume{
				{Name: "kube-api-access-x1y2z", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}},
			},
		},
	}
}

func TestTargetPodShadow(t *testing.T) {
	src := sourcePod()
	p := TargetPod{Source: src, Name: "consumer-0-shadow", Node: "node-b", Image: "reg/ckpt@sha256:1", Container: "app", Migration: "m1"}.Build()
	if p.Name != "consumer-0-shadow" || p.Namespace != "shop" || p.Spec.NodeName != "node-b" {
		t.Fatalf("identity/placement wrong: %s/%s on %s", p.Namespace, p.Name, p.Spec.NodeName)
	}
	if p.Labels["controller-revision-hash"] != "" || p.Labels["statefulset.kubernetes.io/pod-name"] != "" {
		t.Errorf("owner labels copied: %v", p.Labels)
	}
	if p.Labels["app"] != "consumer" || p.Labels[LabelMigration] != "m1" || p.Labels[LabelRole] != RoleTarget {
		t.Errorf("labels %v", p.Labels)
	}
	if _, ok := p.Annotations[corev1.LastAppliedConfigAnnotation]; ok || p.Annotations["team"] != "a" || p.Annotations[AnnotationRestoredFrom] != "consumer-0" {
		t.Errorf("annotations %v", p.Annotations)
	}
	if p.Spec.Hostname != "" || p.Spec.Subdomain != "" {
		t.Errorf("a shadow must not claim the source's DNS identity")
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restart policy %s: a restored container must not be re-restored silently", p.Spec.RestartPolicy)
	}
	if p.Spec.Containers[0].Image != "reg/ckpt@sha256:1" || p.Spec.Containers[1].Image != "registry/sidecar:1" {
		t.Errorf("images %s, %s", p.Spec.Containers[0].Image, p.Spec.Containers[1].Image)
	}
	if len(p.Spec.Volumes) != 1 || p.Spec.Volumes[0].Name != "podinfo" || len(p.Spec.Containers[0].VolumeMounts) != 1 {
		t.Errorf("service account volume not dropped: %+v / %+v", p.Spec.Volumes, p.Spec.Containers[0].VolumeMounts)
	}
	if _, pinned := p.Spec.NodeSelector[corev1.LabelHostname]; pinned || p.Spec.NodeSelector["disk"] != "ssd" {
		t.Errorf("node selector %v: the hostname pin must go, the rest stay", p.Spec.NodeSelector)
	}
	if !hasGate(p.Spec.ReadinessGates, CutoverGate) {
		t.Errorf("no cutover readiness gate")
	}
	if src.Spec.Containers[0].Image != "registry/consumer:1" || len(src.Spec.Volumes) != 2 {
		t.Errorf("the source pod was modified")
	}
}

func TestTargetPodKeepsIdentityWhenSequential(t *testing.T) {
	p := TargetPod{Source: sourcePod(), Name: "consumer-0", Node: "node-b", Image: "i", Container: "app", KeepIdentity: true}.Build()
	if p.Spec.Hostname != "consumer-0" || p.Spec.Subdomain != "consumer" {
		t.Errorf("sequential target lost hostname/subdomain")
	}
}

// Through ms2m's runtime handler the container keeps the workload's image
// (containerd 2.4 would run a checkpoint image as a plain image) and the
// pod names the checkpoint the node's agent staged for it.
func TestTargetPodThroughTheRuntimeHandler(t *testing.T) {
	p := TargetPod{Source: sourcePod(), Name: "consumer-0-shadow", Node: "node-b", Image: "reg/ckpt@sha256:1", Container: "app",
		Migration: "m1", RuntimeClass: "ms2m", CheckpointID: "m1-abc"}.Build()
	if p.Spec.Containers[0].Image != "registry/consumer:1" {
		t.Errorf("image %s: the runtime handler restores into the workload's own image", p.Spec.Containers[0].Image)
	}
	if p.Spec.RuntimeClassName == nil || *p.Spec.RuntimeClassName != "ms2m" {
		t.Errorf("runtimeClassName %v", p.Spec.RuntimeClassName)
	}
	if p.Annotations[staging.AnnotationRestore] != "m1-abc" {
		t.Errorf("annotations %v: the handler would start the container fresh", p.Annotations)
	}
	if env := p.Spec.Containers[0].Env; len(env) == 0 || env[len(env)-1] != (corev1.EnvVar{Name: staging.EnvRestore, Value: "m1-abc"}) {
		t.Errorf("env %v: a runtime that drops the annotation would start the container fresh", env)
	}
	if len(p.Spec.Containers[1].Env) != len(sourcePod().Spec.Containers[1].Env) {
		t.Errorf("a sidecar got the restore marker")
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restart policy %s", p.Spec.RestartPolicy)
	}
	plain := TargetPod{Source: sourcePod(), Name: "x", Node: "node-b", Image: "reg/ckpt@sha256:1", Container: "app"}.Build()
	if _, ok := plain.Annotations[staging.AnnotationRestore]; ok || plain.Spec.RuntimeClassName != nil {
		t.Errorf("a checkpoint-image target carries the handler's marks")
	}
}

// The containers of one cut each name the checkpoint; a container that
// starts fresh names none, even where the source, restored before, names
// its own old one.
func TestTargetPodRestoresEveryContainerOfTheCut(t *testing.T) {
	src := sourcePod()
	for i := range src.Spec.Containers {
		src.Spec.Containers[i].Env = []corev1.EnvVar{{Name: "KEEP", Value: "1"}, {Name: staging.EnvRestore, Value: "old"}}
	}
	restore := func(c corev1.Container) string {
		for _, e := range c.Env {
			if e.Name == staging.EnvRestore {
				return e.Value
			}
		}
		return ""
	}
	both := TargetPod{Source: src, Name: "t", Node: "node-b", Container: "app", Others: []string{"sidecar"},
		Migration: "m1", RuntimeClass: "ms2m", CheckpointID: "m1-abc"}.Build()
	for _, c := range both.Spec.Containers {
		if restore(c) != "m1-abc" || c.Env[0].Name != "KEEP" || len(c.Env) != 2 {
			t.Errorf("container %s of the cut: env %v", c.Name, c.Env)
		}
	}
	alone := TargetPod{Source: src, Name: "t", Node: "node-b", Container: "app",
		Migration: "m1", RuntimeClass: "ms2m", CheckpointID: "m1-abc"}.Build()
	if got := restore(alone.Spec.Containers[1]); got != "" {
		t.Errorf("the fresh sidecar names checkpoint %q: the runtime handler would wait for it", got)
	}
	if restore(src.Spec.Containers[1]) != "old" {
		t.Error("the source pod was changed")
	}
}
