// Package deploy installs ms2m into a cluster from config/ (kustomize),
// with the images and settings of a given environment, by server-side
// apply: the same manifests a user applies, nothing hand-made.
package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Options adapt the manifests to an environment.
type Options struct {
	// Repo is the ms2m source tree (config/ is read from it).
	Repo string
	// ManagerImage and AgentImage replace the images of config/.
	ManagerImage, AgentImage string
	// ManagerArgs and AgentArgs are appended to the containers' args (a
	// later flag wins over an earlier one).
	ManagerArgs, AgentArgs []string
	// Env is added to both containers (the lab's API server address).
	Env []corev1.EnvVar
	// Overlay is the kustomization under config/ to build ("":
	// "default"; "kubelet-engine" adds the kubelet checkpoint engine).
	Overlay string
}

// FieldOwner is ms2m's field manager for server-side apply.
const FieldOwner = client.FieldOwner("ms2m-deploy")

// Render builds config/default (or Options.Overlay) and applies the
// options.
func Render(o Options) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	overlay := o.Overlay
	if overlay == "" {
		overlay = "default"
	}
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(o.Repo, "config", overlay))
	if err != nil {
		return nil, fmt.Errorf("kustomize config/%s: %w", overlay, err)
	}
	raw, err := rm.AsYaml()
	if err != nil {
		return nil, err
	}
	objs, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	for _, u := range objs {
		if err := o.customize(u); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// Decode reads a stream of YAML documents (kustomize's, helm's) into
// objects, skipping empty ones.
func Decode(raw []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

func (o Options) customize(u *unstructured.Unstructured) error {
	switch {
	case u.GetKind() == "Deployment" && u.GetName() == "ms2m-manager":
		return editPodSpec(u, &appsv1.Deployment{}, func(ps *corev1.PodSpec) { o.container(ps, o.ManagerImage, o.ManagerArgs) })
	case u.GetKind() == "DaemonSet" && u.GetName() == "ms2m-agent":
		return editPodSpec(u, &appsv1.DaemonSet{}, func(ps *corev1.PodSpec) { o.container(ps, o.AgentImage, o.AgentArgs) })
	}
	return nil
}

func (o Options) container(ps *corev1.PodSpec, image string, args []string) {
	c := &ps.Containers[0]
	if image != "" {
		c.Image = image
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	c.Args = append(c.Args, args...)
	c.Env = append(c.Env, o.Env...)
}

// editPodSpec edits the pod template of a Deployment or DaemonSet held as
// unstructured, through its typed form.
func editPodSpec[T interface {
	*appsv1.Deployment | *appsv1.DaemonSet
}](u *unstructured.Unstructured, typed T, edit func(*corev1.PodSpec)) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed); err != nil {
		return err
	}
	switch t := any(typed).(type) {
	case *appsv1.Deployment:
		edit(&t.Spec.Template.Spec)
	case *appsv1.DaemonSet:
		edit(&t.Spec.Template.Spec)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed)
	if err != nil {
		return err
	}
	u.Object = obj
	return nil
}

// Apply server-side applies the objects, CRDs first.
func Apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	for _, pass := range []func(*unstructured.Unstructured) bool{
		func(u *unstructured.Unstructured) bool {
			return u.GetKind() == "CustomResourceDefinition" || u.GetKind() == "Namespace"
		},
		func(u *unstructured.Unstructured) bool {
			return u.GetKind() != "CustomResourceDefinition" && u.GetKind() != "Namespace"
		},
	} {
		for _, u := range objs {
			if !pass(u) {
				continue
			}
			u = u.DeepCopy()
			unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
			unstructured.RemoveNestedField(u.Object, "status")
			if err := c.Patch(ctx, u, client.Apply, FieldOwner, client.ForceOwnership); err != nil {
				return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
			}
		}
	}
	return nil
}

// WaitReady waits until the manager Deployment is available and the agent
// DaemonSet has a ready pod of its current template on every node it
// schedules to, and no old pod is still shutting down (a change to the
// DaemonSet's template replaces the agent on every node, one at a time).
func WaitReady(ctx context.Context, c client.Client, namespace string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		dep := &appsv1.Deployment{}
		ds := &appsv1.DaemonSet{}
		errD := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "ms2m-manager"}, dep)
		errA := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "ms2m-agent"}, ds)
		// A rollout is over once the old manager is gone, not merely once
		// the new one is up: until then the old one may still hold the
		// leader lease and reconcile with the old code.
		if errD == nil && errA == nil && dep.Status.ObservedGeneration >= dep.Generation && dep.Status.UpdatedReplicas == *dep.Spec.Replicas &&
			dep.Status.Replicas == *dep.Spec.Replicas && ptrOr(dep.Status.TerminatingReplicas) == 0 && noTerminating(ctx, c, namespace, dep.Spec.Selector) &&
			dep.Status.AvailableReplicas == *dep.Spec.Replicas && ds.Status.ObservedGeneration >= ds.Generation &&
			ds.Status.DesiredNumberScheduled > 0 && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled &&
			ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled && ds.Status.NumberUnavailable == 0 &&
			noTerminating(ctx, c, namespace, ds.Spec.Selector) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ms2m not ready after %s (manager: %d/%d available; agents: %d/%d ready)", timeout,
				dep.Status.AvailableReplicas, ptrOr(dep.Spec.Replicas), ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// noTerminating: no pod of the selector is shutting down.
func noTerminating(ctx context.Context, c client.Client, namespace string, sel *metav1.LabelSelector) bool {
	if sel == nil {
		return true
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(namespace), client.MatchingLabels(sel.MatchLabels)); err != nil {
		return false
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			return false
		}
	}
	return true
}

func ptrOr(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
