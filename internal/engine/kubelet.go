package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// Kubelet checkpoints through the node's kubelet checkpoint API
// (POST /checkpoint/<ns>/<pod>/<ctr>), reached one of two ways:
//
//   - directly (URL set): the agent calls its own node's kubelet with its
//     ServiceAccount token, which the kubelet authorises as
//     `create nodes/checkpoint`: a permission that reaches no pod's
//     specification, logs or exec, unlike nodes/proxy;
//   - through the API server's proxy (REST set, URL empty), which needs
//     nodes/proxy, the key to every kubelet's whole API: for clusters
//     whose kubelets the agents cannot reach directly.
type Kubelet struct {
	// URL is the kubelet's (https://<node address>:<kubelet port>) and
	// HTTP the client that trusts its serving certificate.
	URL  string
	HTTP *http.Client
	// Token is the agent's ServiceAccount token, read per request (the
	// kubelet rotates the projected file).
	Token func() (string, error)
	// REST is the API server client for the proxy path.
	REST rest.Interface
	Node string
	// HostRoot is where the host's root filesystem is mounted in the agent:
	// the kubelet answers with a host path.
	HostRoot string
	// TimeoutSeconds is passed to the kubelet (it defaults to its own).
	TimeoutSeconds int
}

// Name implements Engine.
func (k Kubelet) Name() agentapi.CheckpointEngine { return agentapi.EngineKubelet }

// Checkpoint implements Engine. The runtime pauses the container for the
// dump and the archive and resumes it: it cannot be held.
func (k Kubelet) Checkpoint(ctx context.Context, c Container, o Options) (Result, error) {
	if o.Hold {
		return Result{}, ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "leave a container frozen after its dump (the runtime resumes it)"}
	}
	if o.LazyPages {
		return Result{}, ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "dump without memory pages (post-copy): the kubelet's API has no lazy-pages option"}
	}
	if o.PageSink != nil {
		return Result{}, ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "send memory pages to a page server (Stream): the kubelet's API has no page-server option"}
	}
	if len(o.Others) > 0 {
		return Result{}, ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "dump several containers in one cut: the kubelet's API pauses and resumes one container per call"}
	}
	start := time.Now()
	archive, err := k.checkpoint(ctx, c.Namespace, c.Pod, c.Name)
	if err != nil {
		return Result{}, err
	}
	return Result{Archive: archive, Freeze: time.Since(start)}, nil
}

// Release implements Engine: nothing is ever held.
func (k Kubelet) Release(context.Context, string) error { return nil }

// Kill implements Engine: nothing is ever held, so there is nothing it
// may end.
func (k Kubelet) Kill(context.Context, string) error {
	return ErrUnsupported{Engine: string(agentapi.EngineKubelet), What: "end a held container (it holds none)"}
}

func (k Kubelet) checkpoint(ctx context.Context, ns, pod, ctr string) (string, error) {
	raw, err := k.post(ctx, ns, pod, ctr)
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

func (k Kubelet) post(ctx context.Context, ns, pod, ctr string) ([]byte, error) {
	if k.URL == "" {
		req := k.REST.Post().AbsPath("/api/v1/nodes", k.Node, "proxy", "checkpoint", ns, pod, ctr)
		if k.TimeoutSeconds > 0 {
			req = req.Param("timeout", fmt.Sprint(k.TimeoutSeconds))
		}
		return req.Do(ctx).Raw()
	}
	u := k.URL + "/checkpoint/" + url.PathEscape(ns) + "/" + url.PathEscape(pod) + "/" + url.PathEscape(ctr)
	if k.TimeoutSeconds > 0 {
		u += "?timeout=" + fmt.Sprint(k.TimeoutSeconds)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	tok, err := k.Token()
	if err != nil {
		return nil, fmt.Errorf("the agent's token: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := k.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return raw, fmt.Errorf("%s", resp.Status)
	}
	return raw, nil
}
