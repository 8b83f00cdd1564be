//go:build lab

package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ms2m/ms2m/internal/lab"
	"github.com/ms2m/ms2m/internal/lab/node"
	"github.com/ms2m/ms2m/internal/runtimehandler"
	"github.com/ms2m/ms2m/internal/staging"
)

// runtimeClass makes sure the RuntimeClass of ms2m's runtime handler exists.
func runtimeClass(t *testing.T, cs *kubernetes.Clientset) string {
	t.Helper()
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: node.RuntimeHandlerName}, Handler: node.RuntimeHandlerName}
	if _, err := cs.NodeV1().RuntimeClasses().Create(context.Background(), rc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return rc.Name
}

// kubeletCheckpoint checkpoints a pod's counter container through the API
// server's node proxy and returns the archive's path on the host.
func kubeletCheckpoint(t *testing.T, cs *kubernetes.Clientset, ns, pod, node string) string {
	t.Helper()
	var out checkpointResponse
	waitFor(t, 30*time.Second, func() error {
		raw, err := cs.CoreV1().RESTClient().Post().
			AbsPath("/api/v1/nodes", node, "proxy", "checkpoint", ns, pod, "counter").
			Param("timeout", "60").Do(context.Background()).Raw()
		if err != nil {
			return fmt.Errorf("%w: %s", err, raw)
		}
		return json.Unmarshal(raw, &out)
	})
	if len(out.Items) != 1 {
		t.Fatalf("kubelet returned %v", out.Items)
	}
	return out.Items[0]
}

// stageOn unpacks a checkpoint archive into a node's staging tree for the
// container counter of pod, as the node's agent does.
func stageOn(t *testing.T, c *lab.Config, nodeName, archive string, k staging.Key, id string) {
	t.Helper()
	l := staging.Layout{Dir: c.StagingDir(nodeName)}
	dir, err := l.Begin(k)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := staging.Unpack(context.Background(), f, dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(k, dir, staging.Meta{CheckpointID: id}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Remove(k) })
}

// restoredCounter checkpoints src's counter and restores it as pod name on
// node through ms2m's runtime handler.
func restoredCounter(t *testing.T, c *lab.Config, cs *kubernetes.Clientset, ns string, src *corev1.Pod, name, node string) *corev1.Pod {
	t.Helper()
	rc := runtimeClass(t, cs)
	archive := kubeletCheckpoint(t, cs, ns, src.Name, src.Spec.NodeName)
	id := "labtest-" + ns + "-" + name
	stageOn(t, c, node, archive, staging.Key{Namespace: ns, Pod: name, Container: "counter"}, id)
	return counterPod(t, cs, ns, name, node, src.Spec.Containers[0].Image, restoreFrom(rc, id))
}

// restoreFrom marks a counter pod as ms2m's target pods are marked
// (render.TargetPod): the pod's annotation, and the checkpoint in the
// restored container's environment, which is what the handler goes by.
func restoreFrom(rc, id string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.RuntimeClassName = &rc
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Annotations = map[string]string{runtimehandler.AnnotationRestore: id}
		c := &p.Spec.Containers[0]
		c.Env = append(c.Env, corev1.EnvVar{Name: staging.EnvRestore, Value: id})
	}
}

// A counter checkpointed on node-a resumes on node-b through ms2m's runtime
// handler: the target pod names the counter's own image, not a checkpoint
// image, so this works on a containerd that no longer restores in
// CreateContainer (2.4) as on one that does.
func TestRuntimeHandlerRestoresAStagedCheckpoint(t *testing.T) {
	c := labConfig(t)
	if c.RuntimeHandler == "" {
		t.Fatal("the lab's nodes have no ms2m runtime handler (the lab was brought up outside the source tree)")
	}
	cs := clientset(t, c)
	ns := namespace(t, cs)
	rc := runtimeClass(t, cs)
	image := c.Registry() + "/ms2m/counter:latest"
	src := counterPod(t, cs, ns, "source", "node-a", image)
	base := "http://" + src.Status.PodIP + ":8080"
	for range 5 {
		get(t, base+"/")
	}
	before := state(t, base+"/peek")

	archive := kubeletCheckpoint(t, cs, ns, src.Name, "node-a")
	id := "labtest-" + ns
	stageOn(t, c, "node-b", archive, staging.Key{Namespace: ns, Pod: "restored", Container: "counter"}, id)

	t0 := time.Now()
	dst := counterPod(t, cs, ns, "restored", "node-b", image, restoreFrom(rc, id))
	t.Logf("containerd %s: pod created → Ready %.2fs", c.Containerd, time.Since(t0).Seconds())
	after := state(t, "http://"+dst.Status.PodIP+":8080/")
	if after.Boot != before.Boot || after.PID != before.PID {
		t.Fatalf("node-b runs a fresh process (boot %s pid %d), not the checkpointed one (boot %s pid %d)", after.Boot, after.PID, before.Boot, before.PID)
	}
	if after.Hits != before.Hits+1 {
		t.Fatalf("restored counter has %d hits, want %d: the state did not come along", after.Hits, before.Hits+1)
	}
	if _, err := (staging.Layout{Dir: c.StagingDir("node-b")}).Staged(staging.Key{Namespace: ns, Pod: "restored", Container: "counter"}); err == nil {
		t.Fatal("the checkpoint is still staged after its restore: it could be restored again")
	}

	// Deleted and created again under the same name, the pod is not
	// restored a second time from the same checkpoint: its create fails and
	// says why.
	zero := int64(0)
	if err := cs.CoreV1().Pods(ns).Delete(context.Background(), "restored", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() error {
		_, err := cs.CoreV1().Pods(ns).Get(context.Background(), "restored", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	again := counterPodSpec(ns, "restored", "node-b", image)
	restoreFrom(rc, id)(again)
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), again, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), "restored", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, st := range p.Status.ContainerStatuses {
			if st.State.Running != nil {
				t.Fatalf("the pod runs again: the checkpoint was restored twice, or it started fresh")
			}
			// The runc shim creates the container when the kubelet starts
			// it: the refusal is a StartError.
			msg := ""
			if w := st.State.Waiting; w != nil && w.Reason == "CreateContainerError" {
				msg = w.Message
			}
			if tm := st.State.Terminated; tm != nil && tm.Reason == "StartError" {
				msg = tm.Message
			}
			if msg != "" {
				if !strings.Contains(msg, "never restored again") {
					t.Fatalf("create refused, but the message does not say why: %q", msg)
				}
				return nil
			}
		}
		return fmt.Errorf("waiting for the refusal: %v", p.Status.ContainerStatuses)
	})
}
