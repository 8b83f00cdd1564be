package node

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/internal/staging"
)

func params() Params {
	return Params{
		Name: "node-b", Dir: "/var/tmp/lab/node-b", PKI: "/var/tmp/lab/pki", HostIP: "192.0.2.2",
		KubeletPort: 10251, HealthzPort: 10349, Subnet: "10.88.2.0/24", CgroupRoot: "/ms2m-node-b",
		PauseImage: "127.0.0.1:5055/ms2m/pause:latest", CertsDir: "/var/tmp/lab/certs.d",
		CNIBin: "/deps/cni", Runc: "/deps/runc", Path: "/var/tmp/lab/bin:/usr/bin", KubeBin: "/k8s", Logs: "/var/tmp/lab/logs",
	}
}

func TestCNIConfig(t *testing.T) {
	p := params()
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type   string `json:"type"`
			IPMasq bool   `json:"ipMasq"`
			IPAM   struct {
				Ranges  [][]struct{ Subnet string } `json:"ranges"`
				DataDir string                      `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(p.CNIConfig()), &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Name != "node-b-ptp" || conf.Plugins[0].Type != "ptp" || conf.Plugins[0].IPMasq {
		t.Fatalf("conf %+v", conf)
	}
	// The IPAM state must live in the node's directory, not /var/lib/cni.
	if conf.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.88.2.0/24" || conf.Plugins[0].IPAM.DataDir != "/var/tmp/lab/node-b/ipam" {
		t.Fatalf("ipam %+v", conf.Plugins[0].IPAM)
	}
	if p.Gateway() != "10.88.2.1" {
		t.Fatalf("gateway %s", p.Gateway())
	}
}

func TestKubeletConfig(t *testing.T) {
	var kc map[string]any
	if err := yaml.Unmarshal([]byte(params().KubeletConfig()), &kc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"kind": "KubeletConfiguration", "port": float64(10251), "healthzPort": float64(10349), "cgroupRoot": "/ms2m-node-b",
		"failCgroupV1": false, "makeIPTablesUtilChains": false, "readOnlyPort": float64(0), "cgroupDriver": "cgroupfs",
		"containerRuntimeEndpoint": "unix:///var/tmp/lab/node-b/containerd.sock",
	}
	for k, v := range want {
		if kc[k] != v {
			t.Errorf("%s = %v, want %v", k, kc[k], v)
		}
	}
	if ev := kc["evictionHard"].(map[string]any); ev["nodefs.available"] != "1%" {
		t.Errorf("evictionHard %v", ev)
	}
}

func TestContainerdConfigKeepsToTheNode(t *testing.T) {
	c := params().ContainerdConfig()
	for _, want := range []string{
		"root = '/var/tmp/lab/node-b/containerd/root'",
		"address = '/var/tmp/lab/node-b/containerd.sock'",
		"sandbox = '127.0.0.1:5055/ms2m/pause:latest'",
		"netns_mounts_under_state_dir = true",
		"restrict_oom_score_adj = true",
		"BinaryName = '/deps/runc'",
		"Root = '/var/tmp/lab/node-b/containerd/runc'",
		"[plugins.'io.containerd.nri.v1.nri']\n  disable = true",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("containerd config lacks %q", want)
		}
	}
	env := strings.Join(params().Env(), " ")
	if !strings.Contains(env, "TMPDIR=/var/tmp/lab/node-b/tmp") || !strings.HasPrefix(env, "PATH=/var/tmp/lab/bin:") {
		t.Errorf("env %s", env)
	}
}

// A node with ms2m's runtime handler registers it beside runc, with the
// same runc root, and passes the restore annotation through.
func TestContainerdConfigRegistersTheRuntimeHandler(t *testing.T) {
	p := params()
	p.RuntimeHandlerBinary, p.StagingDir = "/var/tmp/lab/bin/ms2m-runtime", "/var/lib/ms2m/staging/node-b"
	var conf struct {
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
	if err := toml.Unmarshal([]byte(p.ContainerdConfig()), &conf); err != nil {
		t.Fatalf("%v\n%s", err, p.ContainerdConfig())
	}
	rts := conf.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes
	h, runc := rts[RuntimeHandlerName], rts["runc"]
	if h.RuntimeType != "io.containerd.runc.v2" || h.Options["BinaryName"] != p.RuntimeHandlerPath() || h.Options["Root"] != runc.Options["Root"] ||
		len(h.PodAnnotations) != 1 || h.PodAnnotations[0] != staging.AnnotationRestore {
		t.Fatalf("handler %+v (runc %+v)", h, runc)
	}
	var hc struct{ Runc, StagingDir string }
	if err := json.Unmarshal([]byte(p.RuntimeHandlerConfig()), &hc); err != nil || hc.Runc != p.Runc || hc.StagingDir != p.StagingDir {
		t.Fatalf("handler config %+v %v", hc, err)
	}
	if strings.Contains(params().ContainerdConfig(), "runtimes.ms2m") {
		t.Fatal("a node without the handler registers it")
	}
}
