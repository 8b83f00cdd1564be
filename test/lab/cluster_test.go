//go:build lab

package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/internal/lab/probe"
)

func TestBothNodesReady(t *testing.T) {
	c := labConfig(t)
	cs := clientset(t, c)
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready[n.Name] = true
			}
		}
		if n.Status.NodeInfo.KubeletVersion != c.KubeVersion {
			t.Errorf("%s runs kubelet %s, want %s", n.Name, n.Status.NodeInfo.KubeletVersion, c.KubeVersion)
		}
		if want := "containerd://" + c.Containerd + "."; !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, want) {
			t.Errorf("%s runs %s, want containerd %s.x", n.Name, n.Status.NodeInfo.ContainerRuntimeVersion, c.Containerd)
		}
	}
	for _, n := range c.Nodes {
		if !ready[n.Name] {
			t.Errorf("node %s is not Ready", n.Name)
		}
	}
}

func TestCapabilityReportIsWritten(t *testing.T) {
	c := labConfig(t)
	r, err := probe.Read(c.CapabilitiesFile())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Techniques["stopAndCopy"].Available || !r.Techniques["tcpClose"].Available {
		t.Fatalf("the lab cannot checkpoint: %v", r.Summary())
	}
	if !strings.HasPrefix(r.CRIU.Version, "4.") || r.CRIU.Features == nil {
		t.Fatalf("criu %q features %v", r.CRIU.Version, r.CRIU.Features)
	}
	// Whatever the kernel offers, the report must agree with CRIU's own
	// answer about soft-dirty tracking.
	if r.Techniques["preCopy"].Available != r.CRIU.Features["mem_dirty_track"] {
		t.Fatalf("preCopy %v but mem_dirty_track %v", r.Techniques["preCopy"], r.CRIU.Features["mem_dirty_track"])
	}
}

func TestPodsReachEachOtherAndRabbitMQ(t *testing.T) {
	c := labConfig(t)
	cs := clientset(t, c)
	ns := namespace(t, cs)
	image := c.Registry() + "/ms2m/counter:latest"
	a := counterPod(t, cs, ns, "on-a", "node-a", image)
	b := counterPod(t, cs, ns, "on-b", "node-b", image)
	if !strings.HasPrefix(a.Status.PodIP, "10.88.1.") || !strings.HasPrefix(b.Status.PodIP, "10.88.2.") {
		t.Fatalf("pod IPs %s, %s are not in the nodes' subnets", a.Status.PodIP, b.Status.PodIP)
	}
	// a -> b, across the two nodes: b answers with its own state.
	var fromB counterState
	u := fmt.Sprintf("http://%s:8080/fetch?url=%s", a.Status.PodIP, url.QueryEscape("http://"+b.Status.PodIP+":8080/peek"))
	if err := json.Unmarshal(get(t, u), &fromB); err != nil {
		t.Fatal(err)
	}
	direct := state(t, "http://"+b.Status.PodIP+":8080/peek")
	if fromB.Boot == "" || fromB.Boot != direct.Boot {
		t.Fatalf("a reached %q, b is %q", fromB.Boot, direct.Boot)
	}
	// Both pods speak AMQP with the lab's RabbitMQ on the host IP.
	amqp := fmt.Sprintf("%s:%d", c.HostIP, c.Ports.AMQP)
	for _, p := range []*corev1.Pod{a, b} {
		out := string(get(t, fmt.Sprintf("http://%s:8080/dial?amqp=1&addr=%s", p.Status.PodIP, amqp)))
		if !strings.Contains(out, "amqp connection.start") {
			t.Fatalf("%s -> RabbitMQ: %s", p.Name, out)
		}
	}
	// The API server, as an in-cluster client with the pod's service
	// account (the lab has no kube-proxy: pods use the host IP).
	api := string(get(t, fmt.Sprintf("http://%s:8080/fetch?url=%s", b.Status.PodIP, url.QueryEscape(c.APIServerFromPods()+"/api"))))
	if !strings.Contains(api, `"kind":"APIVersions"`) {
		t.Fatalf("API server from a pod: %s", api)
	}
	// And the registry, on the address pods reach it at.
	out := string(get(t, fmt.Sprintf("http://%s:8080/fetch?url=%s", a.Status.PodIP, url.QueryEscape("http://"+c.RegistryFromPods()+"/v2/"))))
	if strings.TrimSpace(out) != "{}" {
		t.Fatalf("registry from a pod: %q", out)
	}
}
