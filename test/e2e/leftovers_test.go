//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
)

// brokerThings are the broker's ms2m objects: queues, exchanges and
// bindings whose destination is an ms2m queue.
type brokerThings struct {
	queues, exchanges, bindings []string
	// controlQueues are the workloads' own control queues, by name.
	controlQueues []string
}

// leftoverSnapshot is what a cell's checks compare against: the broker's
// objects and the files that would hold a checkpoint (CRIU images,
// archives, received and staged checkpoints, operation records).
type leftoverSnapshot struct {
	broker brokerThings
	files  []string
}

func snapshotLeftovers(t *testing.T) leftoverSnapshot {
	t.Helper()
	return leftoverSnapshot{broker: brokerState(t), files: checkpointFiles()}
}

func mgmtGet(t *testing.T, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, labCfg.RabbitMQ().MgmtURL()+path, nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

func brokerState(t *testing.T) brokerThings {
	t.Helper()
	var b brokerThings
	var qs, xs []struct{ Name string }
	mgmtGet(t, "/api/queues/%2F", &qs)
	mgmtGet(t, "/api/exchanges/%2F", &xs)
	for _, q := range qs {
		switch {
		case strings.HasPrefix(q.Name, "ms2m.control."):
			b.controlQueues = append(b.controlQueues, q.Name)
		case strings.HasPrefix(q.Name, "ms2m."):
			b.queues = append(b.queues, q.Name)
		}
	}
	for _, x := range xs {
		if strings.HasPrefix(x.Name, "ms2m.") {
			b.exchanges = append(b.exchanges, x.Name)
		}
	}
	var bs []struct{ Source, Destination, RoutingKey string }
	mgmtGet(t, "/api/bindings/%2F", &bs)
	for _, x := range bs {
		if strings.HasPrefix(x.Destination, "ms2m.") && !strings.HasPrefix(x.Destination, "ms2m.control.") && x.Source != "" {
			b.bindings = append(b.bindings, x.Source+"→"+x.Destination)
		}
	}
	for _, s := range [][]string{b.queues, b.exchanges, b.bindings, b.controlQueues} {
		slices.Sort(s)
	}
	return b
}

// checkpointDirs are every place a node keeps a checkpoint: the agents'
// dumps (tmpfs) and archives, their received checkpoints, the runtime
// handler's staging tree, and the kubelet's checkpoint directory.
func checkpointDirs() []string {
	var dirs []string
	for _, n := range labCfg.Nodes {
		dirs = append(dirs, labCfg.NodeHostDirs(n.Name)...)
		dirs = append(dirs, filepath.Join(labCfg.DumpsDir(), n.Name), filepath.Join(labCfg.Dir, n.Name, "kubelet", "root", "checkpoints"))
	}
	return dirs
}

// checkpointFiles lists the files under checkpointDirs that hold some of a
// checkpoint (not a restored container's work directory, CRIU's log and
// statistics, or the record that it was restored, which live as long as
// the container).
func checkpointFiles() []string {
	var out []string
	for _, d := range checkpointDirs() {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if strings.Contains(p, "/.claimed/") && (strings.Contains(p, "/work/") || filepath.Base(p) == "ms2m-stage.json") {
				return nil
			}
			out = append(out, p)
			return nil
		})
	}
	slices.Sort(out)
	return out
}

// leftovers waits up to a minute for the migration's cleanup, then lists
// what it left: new broker objects, a control queue of a pod that is gone,
// checkpoint files, the checkpoint image in the registry or a node's
// runtime, pods beyond the workload's one, a StatefulSet scaled other
// than it was.
func leftovers(ctx context.Context, t *testing.T, before leftoverSnapshot, m *v1alpha1.StatefulMigration, ns, kind string) []string {
	t.Helper()
	var left []string
	deadline := time.Now().Add(time.Minute)
	for {
		left = leftoversNow(ctx, t, before, m, ns, kind)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(2 * time.Second)
	}
}

func leftoversNow(ctx context.Context, t *testing.T, before leftoverSnapshot, m *v1alpha1.StatefulMigration, ns, kind string) []string {
	var left []string
	now := brokerState(t)
	added := func(what string, b, a []string) {
		for _, x := range a {
			if !slices.Contains(b, x) {
				left = append(left, what+" "+x)
			}
		}
	}
	added("queue", before.broker.queues, now.queues)
	added("exchange", before.broker.exchanges, now.exchanges)
	added("binding", before.broker.bindings, now.bindings)
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, q := range now.controlQueues {
		qns, pod, ok := strings.Cut(strings.TrimPrefix(q, "ms2m.control."), "/")
		if !ok || qns != ns {
			continue
		}
		if !slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.Name == pod }) {
			left = append(left, "control queue "+q+" of a pod that is gone")
		}
	}
	added("checkpoint file", before.files, checkpointFiles())
	if m.Status.Checkpoint != nil && m.Status.Checkpoint.Image != "" {
		img := m.Status.Checkpoint.Image
		if strings.Contains(img, "@") && !strings.HasPrefix(img, "localhost/") {
			ref, err := name.ParseReference(strings.Replace(img, labCfg.RegistryFromPods(), labCfg.Registry(), 1), name.Insecure)
			if err == nil {
				if _, err := remote.Head(ref, remote.WithContext(ctx)); err == nil {
					left = append(left, "registry image "+img)
				}
			}
		}
		for _, n := range labCfg.Nodes {
			imgs, err := runtimeImagesOf(n.Name, img)
			switch {
			case err != nil:
				left = append(left, fmt.Sprintf("%s's runtime does not answer (%v)", n.Name, err))
			case len(imgs) > 0:
				left = append(left, fmt.Sprintf("%s's runtime image %v", n.Name, imgs))
			}
		}
	}
	var running []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			running = append(running, p.Name)
		} else {
			left = append(left, fmt.Sprintf("pod %s (%s)", p.Name, p.Status.Phase))
		}
	}
	if len(running) != 1 {
		left = append(left, fmt.Sprintf("%d running pods %v, want the workload's 1", len(running), running))
	}
	if kind == demo.KindStatefulSet {
		sts := &appsv1.StatefulSet{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "consumer"}, sts); err != nil {
			left = append(left, "StatefulSet: "+err.Error())
		} else if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
			left = append(left, fmt.Sprintf("StatefulSet scaled to %v, was 1", sts.Spec.Replicas))
		}
	}
	return left
}
