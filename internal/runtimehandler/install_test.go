package runtimehandler

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/ms2m/ms2m/internal/staging"
)

var install = Install{Handler: "ms2m", Binary: "/usr/local/bin/ms2m-runtime", Runc: "/usr/bin/runc",
	RuncRoot: "/run/containerd/runc/k8s.io", StagingDir: "/var/lib/ms2m/staging/node-1"}

func TestContainerdConfig(t *testing.T) {
	var got struct {
		Version int `toml:"version"`
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]struct {
					RuntimeType    string         `toml:"runtime_type"`
					PodAnnotations []string       `toml:"pod_annotations"`
					Options        map[string]any `toml:"options"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal([]byte(install.ContainerdConfig()), &got); err != nil {
		t.Fatalf("%v\n%s", err, install.ContainerdConfig())
	}
	rt, ok := got.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes["ms2m"]
	if got.Version != 3 || !ok {
		t.Fatalf("no ms2m runtime in config version %d:\n%s", got.Version, install.ContainerdConfig())
	}
	if rt.RuntimeType != "io.containerd.runc.v2" || rt.Options["BinaryName"] != install.Binary || rt.Options["Root"] != install.RuncRoot ||
		!slices.Contains(rt.PodAnnotations, staging.AnnotationRestore) {
		t.Fatalf("runtime %+v", rt)
	}
}

func TestCRIOConfig(t *testing.T) {
	var got struct {
		Crio struct {
			Runtime struct {
				Runtimes map[string]struct {
					RuntimePath        string   `toml:"runtime_path"`
					RuntimeType        string   `toml:"runtime_type"`
					RuntimeRoot        string   `toml:"runtime_root"`
					AllowedAnnotations []string `toml:"allowed_annotations"`
				} `toml:"runtimes"`
			} `toml:"runtime"`
		} `toml:"crio"`
	}
	if err := toml.Unmarshal([]byte(install.CRIOConfig()), &got); err != nil {
		t.Fatalf("%v\n%s", err, install.CRIOConfig())
	}
	rt := got.Crio.Runtime.Runtimes["ms2m"]
	if rt.RuntimePath != install.Binary || rt.RuntimeType != "oci" || rt.RuntimeRoot != install.RuncRoot {
		t.Fatalf("runtime %+v:\n%s", rt, install.CRIOConfig())
	}
}

// The handler reads back the configuration the installer writes.
func TestHandlerConfigRoundTrips(t *testing.T) {
	var c Config
	if err := json.Unmarshal([]byte(install.HandlerConfig()), &c); err != nil || c.Runc != install.Runc || c.StagingDir != install.StagingDir {
		t.Fatalf("%+v %v", c, err)
	}
}

// CRI-O's containers are found by CRI-O's own annotations.
func TestCRIOContainerKey(t *testing.T) {
	k, ok := containerKey(map[string]string{"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "orders-0",
		"io.kubernetes.container.name": "app", "io.kubernetes.cri-o.ContainerType": "container"})
	if !ok || k != (staging.Key{Namespace: "shop", Pod: "orders-0", Container: "app"}) {
		t.Fatalf("%+v %v", k, ok)
	}
	if _, ok := containerKey(map[string]string{"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": "orders-0",
		"io.kubernetes.cri-o.ContainerType": "sandbox"}); ok {
		t.Fatal("a CRI-O sandbox was taken for a container")
	}
}
