package runtimehandler

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/pelletier/go-toml/v2"

	"github.com/ms2m/ms2m/internal/staging"
)

// Install describes how ms2m's runtime handler is installed on a node.
type Install struct {
	// Handler is the runtime handler name (the RuntimeClass's handler).
	Handler string
	// Binary is where ms2m-runtime is installed.
	Binary string
	// Runc is the runc it hands calls to.
	Runc string
	// RuncRoot is runc's state directory under the runtime: the same as
	// the default runc handler's, so that a restored container is
	// checkpointed again like any other.
	RuncRoot string
	// StagingDir is the node's staging tree (the agent's --staging-dir).
	StagingDir string
	// SystemdCgroup must match the kubelet's cgroup driver (and the
	// default runc handler's option).
	SystemdCgroup bool
}

// HandlerConfig is the handler's own configuration file
// (/etc/ms2m/runtime.json, or <binary>.json).
func (i Install) HandlerConfig() string {
	b, _ := json.MarshalIndent(Config{Runc: i.Runc, StagingDir: i.StagingDir}, "", "  ")
	return string(b) + "\n"
}

// ContainerdConfig registers the handler with containerd 2.x (config
// version 3): a runc-type runtime whose shim runs ms2m-runtime in place of
// runc, passing the restore annotation through from the pod. Its runtime
// table belongs in the node's config.toml beside the runc one: containerd
// replaces a plugin's whole section with an imported file's, so a file
// holding only this would drop the node's other CRI settings.
func (i Install) ContainerdConfig() string {
	opts := map[string]any{"BinaryName": i.Binary, "SystemdCgroup": i.SystemdCgroup}
	if i.RuncRoot != "" {
		opts["Root"] = i.RuncRoot
	}
	cfg := map[string]any{
		"version": 3,
		"plugins": map[string]any{
			"io.containerd.cri.v1.runtime": map[string]any{
				"containerd": map[string]any{
					"runtimes": map[string]any{
						i.Handler: map[string]any{
							"runtime_type":    "io.containerd.runc.v2",
							"pod_annotations": []string{staging.AnnotationRestore},
							"options":         opts,
						},
					},
				},
			},
		},
	}
	return encodeTOML(cfg)
}

// CRIOConfig registers the handler with CRI-O (a drop-in under
// /etc/crio/crio.conf.d): an OCI runtime at Binary. CRI-O names the pod and
// container in annotations of its own, which the handler reads.
func (i Install) CRIOConfig() string {
	rt := map[string]any{
		"runtime_path":        i.Binary,
		"runtime_type":        "oci",
		"allowed_annotations": []string{staging.AnnotationRestore},
	}
	if i.RuncRoot != "" {
		rt["runtime_root"] = i.RuncRoot
	}
	return encodeTOML(map[string]any{"crio": map[string]any{"runtime": map[string]any{"runtimes": map[string]any{i.Handler: rt}}}})
}

func encodeTOML(v any) string {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("# %v\n", err)
	}
	return b.String()
}
