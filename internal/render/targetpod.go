// Package render builds the objects a migration creates, as pure functions
// of what the controller observed: no API calls, so every rule about the
// target pod is unit-tested.
package render

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/internal/staging"
)

// Labels and annotations ms2m puts on what it creates.
const (
	LabelMigration = "migration.ms2m.io/migration"
	LabelRole      = "migration.ms2m.io/role"
	RoleTarget     = "target"
	// AnnotationRestoredFrom names the source pod of a restored pod.
	AnnotationRestoredFrom = "migration.ms2m.io/restored-from"
	// AnnotationCheckpointImage names the checkpoint the pod restores.
	AnnotationCheckpointImage = "migration.ms2m.io/checkpoint-image"
	// CutoverGate is the readiness gate that keeps a restored pod out of its
	// Services until it has caught up and the controller cuts over to it.
	CutoverGate corev1.PodConditionType = "migration.ms2m.io/cutover"
)

// ownerLabels are set by workload controllers on the pods they own; a copy
// on the target would make them adopt (and perhaps delete) it mid-migration.
var ownerLabels = []string{
	"pod-template-hash",
	"controller-revision-hash",
	"statefulset.kubernetes.io/pod-name",
	"apps.kubernetes.io/pod-index",
}

// TargetPod is the pod that restores the checkpoint on the target node.
type TargetPod struct {
	Source    *corev1.Pod
	Name      string
	Node      string
	Image     string
	Container string
	// Others are the pod's containers restored with Container, from the
	// same checkpoint (runtime handler only).
	Others    []string
	Migration string
	// KeepIdentity keeps hostname/subdomain (Sequential: the target takes
	// the source's place); a shadow beside the source must not claim them.
	KeepIdentity bool
	// RuntimeClass, when set, restores through ms2m's runtime handler: the
	// container keeps the workload's own image and the pod runs under this
	// RuntimeClass, naming CheckpointID, which the target node's agent
	// staged for it. Otherwise the container's image is the checkpoint
	// image, which the runtime restores itself.
	RuntimeClass string
	CheckpointID string
}

// Build renders the target pod.
func (t TargetPod) Build() *corev1.Pod {
	src := t.Source
	labels := map[string]string{}
	for k, v := range src.Labels {
		labels[k] = v
	}
	for _, k := range ownerLabels {
		delete(labels, k)
	}
	labels[LabelMigration] = t.Migration
	labels[LabelRole] = RoleTarget

	annotations := map[string]string{}
	for k, v := range src.Annotations {
		if k == corev1.LastAppliedConfigAnnotation {
			continue
		}
		annotations[k] = v
	}
	annotations[AnnotationRestoredFrom] = src.Name
	if t.Image != "" {
		annotations[AnnotationCheckpointImage] = t.Image
	}
	if t.RuntimeClass != "" {
		annotations[staging.AnnotationRestore] = t.CheckpointID
	}

	spec := *src.Spec.DeepCopy()
	spec.NodeName = t.Node
	// A source pinned to its node by hostname would be refused by the
	// target node's kubelet; other placement constraints stay.
	delete(spec.NodeSelector, corev1.LabelHostname)
	spec.EphemeralContainers = nil
	// A restored container that dies must not be restored again by the
	// kubelet from the same checkpoint (its state would silently go back in
	// time): the pod fails instead and the controller says so.
	spec.RestartPolicy = corev1.RestartPolicyNever
	if !t.KeepIdentity {
		spec.Hostname, spec.Subdomain = "", ""
	}
	spec.Volumes, spec.Containers, spec.InitContainers = dropServiceAccountVolume(spec.Volumes, spec.Containers, spec.InitContainers)
	if t.RuntimeClass != "" {
		spec.RuntimeClassName = &t.RuntimeClass
		for i := range spec.Containers {
			// A source restored before carries its own checkpoint's, on
			// containers that may start fresh now.
			env := slices.DeleteFunc(spec.Containers[i].Env, func(e corev1.EnvVar) bool { return e.Name == staging.EnvRestore })
			if spec.Containers[i].Name == t.Container || slices.Contains(t.Others, spec.Containers[i].Name) {
				env = append(env, corev1.EnvVar{Name: staging.EnvRestore, Value: t.CheckpointID})
			}
			spec.Containers[i].Env = env
		}
	} else {
		for i := range spec.Containers {
			if spec.Containers[i].Name == t.Container {
				spec.Containers[i].Image = t.Image
				spec.Containers[i].ImagePullPolicy = corev1.PullIfNotPresent
			}
		}
	}
	if !hasGate(spec.ReadinessGates, CutoverGate) {
		spec.ReadinessGates = append(spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: CutoverGate})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: src.Namespace, Labels: labels, Annotations: annotations},
		Spec:       spec,
	}
}

// dropServiceAccountVolume removes the projected token volume the
// ServiceAccount admission added to the source (kube-api-access-<random>):
// admission adds a fresh one, under a new random name, to the target, at the
// same mount path the checkpoint expects.
func dropServiceAccountVolume(vols []corev1.Volume, ctrs, inits []corev1.Container) ([]corev1.Volume, []corev1.Container, []corev1.Container) {
	drop := map[string]bool{}
	var kept []corev1.Volume
	for _, v := range vols {
		if strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil {
			drop[v.Name] = true
			continue
		}
		kept = append(kept, v)
	}
	strip := func(cs []corev1.Container) []corev1.Container {
		for i := range cs {
			var mounts []corev1.VolumeMount
			for _, m := range cs[i].VolumeMounts {
				if !drop[m.Name] {
					mounts = append(mounts, m)
				}
			}
			cs[i].VolumeMounts = mounts
		}
		return cs
	}
	return kept, strip(ctrs), strip(inits)
}

func hasGate(gates []corev1.PodReadinessGate, t corev1.PodConditionType) bool {
	for _, g := range gates {
		if g.ConditionType == t {
			return true
		}
	}
	return false
}

// CutoverOpen reports whether the pod's cutover gate condition is True.
func CutoverOpen(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == CutoverGate {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ContainersReady reports the pod's ContainersReady condition: restored and
// passing its own readiness probes, independent of the cutover gate.
func ContainersReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.ContainersReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
