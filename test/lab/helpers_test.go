//go:build lab

package lab_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/ms2m/ms2m/internal/lab"
)

// labConfig loads the running lab; these tests never start one themselves
// (`make test-lab` does), and fail rather than skip without it.
func labConfig(t *testing.T) *lab.Config {
	t.Helper()
	dir := os.Getenv("MS2M_LAB_DIR")
	if dir == "" {
		dir = "/var/tmp/ms2m-lab"
	}
	c, err := lab.Load(dir)
	if err != nil {
		t.Fatalf("the lab is not up (run `make test-lab`): %v", err)
	}
	return c
}

func clientset(t *testing.T, c *lab.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := c.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// namespace makes a namespace that is deleted when the test ends.
func namespace(t *testing.T, cs *kubernetes.Clientset) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "labtest-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	// Pods need the namespace's default ServiceAccount.
	waitFor(t, 30*time.Second, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(context.Background(), "default", metav1.GetOptions{})
		return err
	})
	return ns.Name
}

// counterPodSpec is the counter app's pod (or a checkpoint of it) on node.
func counterPodSpec(ns, name, node, image string) *corev1.Pod {
	// A tag may point at a newer build than the node has.
	pull := corev1.PullAlways
	if strings.Contains(image, "@sha256:") {
		pull = corev1.PullIfNotPresent
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "counter"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: ptr(int64(1)),
			Containers: []corev1.Container{{
				Name:            "counter",
				Image:           image,
				ImagePullPolicy: pull,
				Ports:           []corev1.ContainerPort{{ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/peek", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
	return pod
}

// counterPod runs the counter app (or a checkpoint of it) on node.
func counterPod(t *testing.T, cs *kubernetes.Clientset, ns, name, node, image string, mods ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	pod := counterPodSpec(ns, name, node, image)
	for _, m := range mods {
		m(pod)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	waitFor(t, 2*time.Minute, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = p
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			t.Fatalf("pod %s ended: %s %s", name, p.Status.Phase, p.Status.Message)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
				return nil
			}
		}
		return fmt.Errorf("pod %s: %s %v", name, p.Status.Phase, p.Status.ContainerStatuses)
	})
	if got.Spec.NodeName != node {
		t.Fatalf("pod %s landed on %s, not %s", name, got.Spec.NodeName, node)
	}
	return got
}

func ptr[T any](v T) *T { return &v }

func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("not within %s: %v", d, err)
}

// counterState is what the counter app returns.
type counterState struct {
	Hits  int64  `json:"hits"`
	Ticks int64  `json:"ticks"`
	Boot  string `json:"boot"`
	PID   int    `json:"pid"`
	Held  []struct {
		Addr string `json:"addr"`
		Open bool   `json:"open"`
		End  string `json:"end"`
	} `json:"held"`
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

func state(t *testing.T, url string) counterState {
	t.Helper()
	var s counterState
	if err := json.Unmarshal(get(t, url), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// kubeletClient talks to a kubelet directly as the lab's admin.
func kubeletClient(t *testing.T, c *lab.Config) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(c.PKIDir(), "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.PKIDir(), "admin.crt"), filepath.Join(c.PKIDir(), "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
}
