//go:build lab

package lab_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/internal/ckptimage"
)

// checkpointResponse is the kubelet's answer: the archives it wrote.
type checkpointResponse struct {
	Items []string `json:"items"`
}

// archiveEntries lists a checkpoint archive's top-level names.
func archiveEntries(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("%s is not a tar archive: %v", path, err)
		}
		top, _, _ := strings.Cut(strings.TrimPrefix(h.Name, "./"), "/")
		names[top] = true
	}
}

// The kubelet's checkpoint API, called directly on node-a's kubelet port,
// writes an archive holding CRIU's images and the container's metadata.
func TestKubeletCheckpointAPIReturnsAnArchive(t *testing.T) {
	c := labConfig(t)
	cs := clientset(t, c)
	ns := namespace(t, cs)
	pod := counterPod(t, cs, ns, "ckpt-direct", "node-a", c.Registry()+"/ms2m/counter:latest")
	hc := kubeletClient(t, c)
	url := fmt.Sprintf("https://127.0.0.1:%d/checkpoint/%s/%s/counter?timeout=60", c.Nodes[0].KubeletPort, ns, pod.Name)
	var resp *http.Response
	// The kubelet caches authorization decisions; a fresh namespace may
	// need a moment.
	waitFor(t, 30*time.Second, func() error {
		var err error
		resp, err = hc.Post(url, "", nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil
	})
	defer resp.Body.Close()
	var out checkpointResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 {
		t.Fatalf("kubelet returned %v", out.Items)
	}
	fi, err := os.Stat(out.Items[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("archive %s, %d bytes", out.Items[0], fi.Size())
	entries := archiveEntries(t, out.Items[0])
	for _, want := range []string{"checkpoint", "config.dump", "spec.dump"} {
		if !entries[want] {
			t.Errorf("archive lacks %s (has %v)", want, entries)
		}
	}
	// The source keeps running after a checkpoint.
	state(t, "http://"+pod.Status.PodIP+":8080/peek")
}

// A checkpoint image (the kubelet's archive wrapped as an OCI image) is
// restored by containerd's own CreateContainer only where containerd still
// does that (2.1); containerd 2.4 runs it as a plain image, which has no
// command. This is the path ms2m's runtime handler replaces.
func TestCheckpointImageRestoresOnlyWhereContainerdDoes(t *testing.T) {
	c := labConfig(t)
	cs := clientset(t, c)
	ns := namespace(t, cs)
	src := counterPod(t, cs, ns, "source", "node-a", c.Registry()+"/ms2m/counter:latest")
	base := "http://" + src.Status.PodIP + ":8080"
	for range 7 {
		get(t, base+"/")
	}
	before := state(t, base+"/peek")

	archive := kubeletCheckpoint(t, cs, ns, src.Name, src.Spec.NodeName)
	idx, err := ckptimage.Build(archive, ckptimage.Options{ContainerName: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("%s/ms2m/counter-checkpoint:%s-%d", c.Registry(), ns, time.Now().Unix())
	dig, err := ckptimage.Push(context.Background(), idx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if c.Containerd != "2.1" {
		pod := counterPodSpec(ns, "restored", "node-b", dig.String())
		if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, func() error {
			p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.State.Running != nil {
					t.Fatalf("containerd %s ran the checkpoint image", c.Containerd)
				}
				if w := st.State.Waiting; w != nil && w.Reason == "CreateContainerError" {
					t.Logf("containerd %s: %s", c.Containerd, w.Message)
					return nil
				}
			}
			return fmt.Errorf("waiting for the refusal: %v", p.Status.ContainerStatuses)
		})
		return
	}
	dst := counterPod(t, cs, ns, "restored", "node-b", dig.String())
	after := state(t, "http://"+dst.Status.PodIP+":8080/")
	if after.Boot != before.Boot || after.PID != before.PID {
		t.Fatalf("node-b runs a fresh process (boot %s pid %d), not the checkpointed one (boot %s pid %d)", after.Boot, after.PID, before.Boot, before.PID)
	}
	if after.Hits != before.Hits+1 {
		t.Fatalf("restored counter has %d hits, want %d: the state did not come along", after.Hits, before.Hits+1)
	}
}

// A pod holding a live TCP connection checkpoints (runc's CRIU config has
// tcp-close) and resumes on node-b with the connection closed, so that its
// client code reconnects from the new pod IP.
func TestCheckpointWithALiveTCPConnection(t *testing.T) {
	c := labConfig(t)
	cs := clientset(t, c)
	ns := namespace(t, cs)
	ln, err := net.Listen("tcp", c.HostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if conn, err := ln.Accept(); err == nil {
			accepted <- conn
		}
	}()
	src := counterPod(t, cs, ns, "holder", "node-a", c.Registry()+"/ms2m/counter:latest")
	base := "http://" + src.Status.PodIP + ":8080"
	get(t, base+"/hold?addr="+ln.Addr().String())
	var server net.Conn
	select {
	case server = <-accepted:
		defer server.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the pod's connection never arrived")
	}
	get(t, base+"/")

	dst := restoredCounter(t, c, cs, ns, src, "holder-restored", "node-b")
	restored := "http://" + dst.Status.PodIP + ":8080"
	var s counterState
	waitFor(t, 10*time.Second, func() error {
		s = state(t, restored+"/peek")
		if len(s.Held) != 1 || s.Held[0].Open {
			return fmt.Errorf("restored pod's connection: %+v", s.Held)
		}
		return nil
	})
	if s.Hits != 1 {
		t.Fatalf("restored hits %d, want 1", s.Hits)
	}
	t.Logf("restored pod saw its connection end: %s", s.Held[0].End)
	// The source's connection is untouched: the checkpoint only froze it.
	if src := state(t, base+"/peek"); len(src.Held) != 1 || !src.Held[0].Open {
		t.Fatalf("source connection after the checkpoint: %+v", src.Held)
	}
	if _, err := server.Write([]byte("still there\n")); err != nil {
		t.Fatalf("the source's peer lost the connection: %v", err)
	}
}
