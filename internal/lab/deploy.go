package lab

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/deploy"
	"github.com/ms2m/ms2m/internal/lab/node"
)

// Namespace is where the lab runs ms2m.
const Namespace = "ms2m-system"

// Client is an admin controller-runtime client of the lab, knowing ms2m's
// kinds.
func (c *Config) Client() (client.Client, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = 50, 100
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	return client.New(rc, client.Options{Scheme: scheme})
}

// CheckpointRepository is where Registry transfers put checkpoint images
// in the lab.
func (c *Config) CheckpointRepository() string { return c.Registry() + "/ms2m/checkpoints" }

// DeployOptions adapt config/ to the lab: images from its registry, the API
// server reached past the missing kube-proxy, each node's containerd, and
// the registry that runtimes call 127.0.0.1 reached by pods on the host IP.
func (c *Config) DeployOptions(repo string, images map[string]string) deploy.Options {
	api, _ := url.Parse(c.APIServerFromPods())
	return deploy.Options{
		Repo:         repo,
		ManagerImage: images["manager"],
		AgentImage:   images["agent"],
		Env: []corev1.EnvVar{
			{Name: "KUBERNETES_SERVICE_HOST", Value: api.Hostname()},
			{Name: "KUBERNETES_SERVICE_PORT", Value: api.Port()},
		},
		ManagerArgs: []string{"--default-checkpoint-repository=" + c.CheckpointRepository(), "--leader-elect=false"},
		AgentArgs:   c.agentArgs(),
		// The lab runs both engines: its containerd 2.1 lane restores
		// checkpoint images, which only the kubelet's checkpoint produces,
		// and the bench compares them.
		Overlay: "kubelet-engine",
	}
}

func (c *Config) agentArgs() []string {
	args := []string{
		"--containerd-socket=" + path.Join(c.Dir, "{node}", "containerd.sock"),
		"--registry-alias=" + c.Registry() + "=" + c.RegistryFromPods(),
		// The lab's registry has no TLS; it is on the host, for the lab only.
		"--plain-http-registry=" + c.RegistryFromPods(),
		"--staging-dir=" + c.StagingDir("{node}"),
		"--state-dir=" + c.AgentStateDir("{node}"),
		"--archive-dir=" + c.ArchiveDir("{node}"),
		// The runc engine: the node's runc, its containerd's runc root
		// (the shim's Root plus the k8s.io namespace) and the lab's CRIU.
		"--runc=" + c.Runc(),
		"--runc-root=" + path.Join(c.Dir, "{node}", "containerd", "runc", "k8s.io"),
		"--criu=" + c.Deps.CRIU,
		"--dump-dir=" + path.Join(c.DumpsDir(), "{node}"),
	}
	if c.RuntimeHandler != "" {
		args = append(args, "--runtime-handler="+node.RuntimeHandlerName,
			"--runtime-handler-binary="+path.Join(c.Dir, "{node}", "ms2m-runtime"))
	}
	return args
}

// Deploy builds and pushes the images, installs ms2m from config/ with
// the lab's settings and waits until the manager and every agent are ready.
func Deploy(ctx context.Context, c *Config, repo string, out io.Writer) (map[string]string, error) {
	if repo == "" {
		var err error
		if repo, err = RepoRoot(); err != nil {
			return nil, err
		}
	}
	if c.RuntimeHandler != "" {
		// The handler is part of what is deployed: it must be the tree's,
		// like the agent that stages for it.
		if _, err := buildRuntimeHandler(ctx, c, repo); err != nil {
			return nil, err
		}
	}
	refs, err := PushImages(ctx, c, repo, "latest", nil, out)
	if err != nil {
		return nil, err
	}
	images := map[string]string{}
	for _, r := range refs {
		name := path.Base(strings.SplitN(r, "@", 2)[0])
		images[name] = r
	}
	for _, want := range []string{"manager", "agent"} {
		if images[want] == "" {
			return nil, fmt.Errorf("no %s image was built (built: %v)", want, refs)
		}
	}
	objs, err := deploy.Render(c.DeployOptions(repo, images))
	if err != nil {
		return nil, err
	}
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	t := time.Now()
	if err := deploy.Apply(ctx, cl, objs); err != nil {
		return nil, err
	}
	if err := deploy.WaitReady(ctx, cl, Namespace, 3*time.Minute); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "ms2m deployed in %s: manager and agents ready (%.1fs)\n", Namespace, time.Since(t).Seconds())
	return images, nil
}
