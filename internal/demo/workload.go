// Package demo runs a migration in the lab under a live producer and
// measures it from outside: service downtime (HTTP probes every 10 ms with a
// 1 s timeout), the longest stall, the processing gap, and whether the
// consumer applied every published message exactly once (digest).
package demo

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kinds of workload the demo can migrate.
const (
	KindPod         = "Pod"
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
)

// Workload describes the consumer to run.
type Workload struct {
	Kind      string
	Namespace string
	Name      string
	Image     string
	AMQPURL   string
	Queue     string
	// Delay per message (capacity = 1/Delay) and in-memory state size.
	Delay      time.Duration
	StateBytes string
	Prefetch   int
	Node       string
	// Env is more environment for the consumer (the protocol-only
	// consumer's MS2M_CONTROL=poll and MS2M_IGNORE_SIGTERM=1, say).
	Env map[string]string
	// Grace is the pods' termination grace period in seconds (default 5;
	// Kubernetes' own default is 30).
	Grace int64
	// Journal, if set, has the consumer journal applied messages to this
	// file name on a node-local emptyDir volume: state a checkpoint does not
	// carry (it holds open files by path, not volume contents), so the pod
	// cannot be restored on another node.
	Journal string
	// Sidecar, if set, is the lab's counter image: the pod gets an init
	// container (counter -once) and a second container, "counter", which
	// keeps a count in memory and answers on port 8081.
	Sidecar string
}

func (w Workload) labels() map[string]string { return map[string]string{"app": w.Name} }

func (w Workload) podSpec() corev1.PodSpec {
	spec := w.baseSpec()
	if w.Sidecar != "" {
		spec.InitContainers = append(spec.InitContainers, corev1.Container{Name: "init", Image: w.Sidecar, Args: []string{"-once"}})
		spec.Containers = append(spec.Containers, corev1.Container{Name: "counter", Image: w.Sidecar, Args: []string{"-listen", ":8081"},
			Ports: []corev1.ContainerPort{{Name: "counter", ContainerPort: 8081}}})
	}
	if w.Journal != "" {
		c := &spec.Containers[0]
		c.Env = append(c.Env, corev1.EnvVar{Name: "MS2M_JOURNAL", Value: "/scratch/" + w.Journal})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "scratch", MountPath: "/scratch"})
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return spec
}

func (w Workload) baseSpec() corev1.PodSpec {
	grace := w.Grace
	if grace == 0 {
		grace = 5
	}
	spec := corev1.PodSpec{
		NodeSelector:                  map[string]string{"kubernetes.io/hostname": w.Node},
		TerminationGracePeriodSeconds: ptr.To(grace),
		Containers: []corev1.Container{{
			Name:  "consumer",
			Image: w.Image,
			Env: []corev1.EnvVar{
				{Name: "MS2M_AMQP_URL", Value: w.AMQPURL},
				{Name: "MS2M_QUEUE", Value: w.Queue},
				{Name: "MS2M_PROCESSING_DELAY", Value: w.Delay.String()},
				{Name: "MS2M_STATE_BYTES", Value: w.StateBytes},
				{Name: "MS2M_PREFETCH", Value: fmt.Sprint(w.Prefetch)},
			},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1, TimeoutSeconds: 1},
			VolumeMounts: []corev1.VolumeMount{{Name: "podinfo", MountPath: "/etc/podinfo"}},
		}},
		Volumes: []corev1.Volume{{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{
				{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
				{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			}}}}},
	}
	for _, k := range slices.Sorted(maps.Keys(w.Env)) {
		spec.Containers[0].Env = append(spec.Containers[0].Env, corev1.EnvVar{Name: k, Value: w.Env[k]})
	}
	return spec
}

// Create starts the workload and its Service and waits until one pod is
// Ready; it returns that pod's name.
func (w Workload) Create(ctx context.Context, c client.Client) (string, error) {
	meta := metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace, Labels: w.labels()}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: w.labels()}, Spec: w.podSpec()}
	var obj client.Object
	switch w.Kind {
	case KindPod:
		obj = &corev1.Pod{ObjectMeta: meta, Spec: tmpl.Spec}
	case KindDeployment:
		obj = &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: w.labels()}, Template: tmpl}}
	case KindStatefulSet:
		obj = &appsv1.StatefulSet{ObjectMeta: meta, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), ServiceName: w.Name,
			Selector: &metav1.LabelSelector{MatchLabels: w.labels()}, Template: tmpl}}
	default:
		return "", fmt.Errorf("unknown workload kind %q", w.Kind)
	}
	svc := &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{Selector: w.labels(),
		Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}}}}
	for _, o := range []client.Object{svc, obj} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("creating %s: %w", o.GetName(), err)
		}
	}
	var pod string
	err := poll(ctx, 2*time.Minute, func() (bool, error) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(w.Namespace), client.MatchingLabels(w.labels())); err != nil {
			return false, err
		}
		for i := range pods.Items {
			if podReady(&pods.Items[i]) {
				pod = pods.Items[i].Name
				return true, nil
			}
		}
		return false, nil
	})
	return pod, err
}

func podReady(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll calls cond every 100 ms until it is done, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
