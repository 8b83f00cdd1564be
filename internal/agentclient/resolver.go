package agentclient

import (
	"context"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// AgentLabel marks agent pods (the DaemonSet's selector).
const (
	AgentLabel      = "app.kubernetes.io/name"
	AgentLabelValue = "ms2m-agent"
	// Port is the agent API's port.
	Port = 9443
)

// PodResolver finds a node's agent among the agent pods: the Running, Ready
// one on that node.
type PodResolver struct {
	Reader    client.Reader
	Namespace string
	Port      int
}

// Endpoint implements Resolver.
func (r PodResolver) Endpoint(ctx context.Context, node string) (string, error) {
	pods := &corev1.PodList{}
	if err := r.Reader.List(ctx, pods, client.InNamespace(r.Namespace), client.MatchingLabels{AgentLabel: AgentLabelValue}); err != nil {
		return "", err
	}
	port := r.Port
	if port == 0 {
		port = Port
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == node && p.Status.Phase == corev1.PodRunning && podReady(p) && p.Status.PodIP != "" {
			return "https://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)), nil
		}
	}
	return "", fmt.Errorf("%w %s (no Running, Ready pod labelled %s=%s in namespace %s)", agentapi.ErrNoAgent, node, AgentLabel, AgentLabelValue, r.Namespace)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
