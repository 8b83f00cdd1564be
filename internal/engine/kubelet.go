package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// KubeletProxy checkpoints through the API server's proxy to the node's
// kubelet (POST /api/v1/nodes/<node>/proxy/checkpoint/<ns>/<pod>/<ctr>):
// it needs only the nodes/proxy permission, and no trust in the kubelet's
// serving certificate.
type KubeletProxy struct {
	REST rest.Interface
	Node string
	// HostRoot is where the host's root filesystem is mounted in the agent:
	// the kubelet answers with a host path.
	HostRoot string
	// TimeoutSeconds is passed to the kubelet (it defaults to its own).
	TimeoutSeconds int
}

// Name implements Engine.
func (k KubeletProxy) Name() agentapi.CheckpointEngine { return agentapi.EngineKubelet }

// Checkpoint implements Engine. The runtime pauses the container for the
// dump and the archive and resumes it: it cannot be held.
func (k KubeletProxy) Checkpoint(ctx context.Context, c Container, o Options) (Result, error) {
	if o.Hold {
		return Result{}, ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "leave a container frozen after its dump (the runtime resumes it)"}
	}
	start := time.Now()
	archive, err := k.checkpoint(ctx, c.Namespace, c.Pod, c.Name)
	if err != nil {
		return Result{}, err
	}
	return Result{Archive: archive, Freeze: time.Since(start)}, nil
}

// Release implements Engine: nothing is ever held.
func (k KubeletProxy) Release(context.Context, string) error { return nil }

// Kill implements Engine: nothing is ever held, so there is nothing it
// may end.
func (k KubeletProxy) Kill(context.Context, string) error {
	return ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "end a held container (it holds none)"}
}

func (k KubeletProxy) checkpoint(ctx context.Context, ns, pod, ctr string) (string, error) {
	req := k.REST.Post().AbsPath("/api/v1/nodes", k.Node, "proxy", "checkpoint", ns, pod, ctr)
	if k.TimeoutSeconds > 0 {
		req = req.Param("timeout", fmt.Sprint(k.TimeoutSeconds))
	}
	res := req.Do(ctx)
	raw, err := res.Raw()
	if err != nil {
		return "", fmt.Errorf("kubelet checkpoint of %s/%s/%s on %s: %w: %s", ns, pod, ctr, k.Node, err, strings.TrimSpace(string(raw)))
	}
	var body struct {
		Items []string `json:"items"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || len(body.Items) == 0 {
		return "", fmt.Errorf("kubelet checkpoint of %s/%s/%s: unexpected answer %q", ns, pod, ctr, string(raw))
	}
	return filepath.Join(k.HostRoot, body.Items[0]), nil
}
