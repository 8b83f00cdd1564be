package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/ms2m/ms2m/internal/lab/controlplane"
	"github.com/ms2m/ms2m/internal/lab/deps"
	"github.com/ms2m/ms2m/internal/lab/node"
	"github.com/ms2m/ms2m/internal/lab/rabbitmq"
	"github.com/ms2m/ms2m/internal/lab/registry"
)

// Node is one lab node.
type Node struct {
	Name        string `json:"name"`
	KubeletPort int    `json:"kubeletPort"`
	HealthzPort int    `json:"healthzPort"`
	Subnet      string `json:"subnet"`
	CgroupRoot  string `json:"cgroupRoot"`
}

// Ports of the lab's services. The defaults keep clear of the ports other
// tools of the project use (envtest picks free ports; the test broker of
// hack/rabbitmq.sh uses 5673).
type Ports struct {
	APIServer    int `json:"apiServer"`
	Etcd         int `json:"etcd"`
	EtcdPeer     int `json:"etcdPeer"`
	Registry     int `json:"registry"`
	AMQP         int `json:"amqp"`
	AMQPMgmt     int `json:"amqpMgmt"`
	AMQPDist     int `json:"amqpDist"`
	EPMD         int `json:"epmd"`
	ControllerMg int `json:"controllerManager"`
	Scheduler    int `json:"scheduler"`
}

// Config is a lab's whole description; `up` stores it as lab.json so that
// `status`, `env` and `down` work from it.
type Config struct {
	Dir         string `json:"dir"`
	Cache       string `json:"cache"`
	HostIP      string `json:"hostIP"`
	KubeVersion string `json:"kubeVersion"`
	// Containerd is the runtime series the nodes run (deps.RuntimeSeries).
	Containerd  string `json:"containerd"`
	ServiceCIDR string `json:"serviceCIDR"`
	Nodes       []Node `json:"nodes"`
	Ports       Ports  `json:"ports"`
	// Filled by `up` once the binaries are there.
	KubeBin string        `json:"kubeBin,omitempty"`
	Deps    *deps.Paths   `json:"deps,omitempty"`
	Runtime *deps.Runtime `json:"runtime,omitempty"`
	// RuntimeHandler is ms2m's runtime handler built from the source tree.
	RuntimeHandler string `json:"runtimeHandler,omitempty"`
	// RabbitMQRoot is the root file system RabbitMQ 4 runs from
	// (hack/rabbitmq-root.sh); empty runs the host's package (3.10).
	RabbitMQRoot string `json:"rabbitmqRoot,omitempty"`
}

// Default is the lab's configuration, adjusted by MS2M_LAB_DIR, MS2M_CACHE
// and MS2M_LAB_HOST_IP.
func Default() (*Config, error) {
	home, _ := os.UserHomeDir()
	c := &Config{
		Dir:         envOr("MS2M_LAB_DIR", "/var/tmp/ms2m-lab"),
		Cache:       envOr("MS2M_CACHE", filepath.Join(home, ".cache", "ms2m")),
		KubeVersion: envOr("MS2M_KUBE_VERSION", "v1.37.2"),
		Containerd:  envOr("MS2M_LAB_CONTAINERD", "2.4"),
		ServiceCIDR: "10.0.0.0/24",
		Nodes: []Node{
			{Name: "node-a", KubeletPort: 10250, HealthzPort: 10348, Subnet: "10.88.1.0/24", CgroupRoot: "/ms2m-node-a"},
			{Name: "node-b", KubeletPort: 10251, HealthzPort: 10349, Subnet: "10.88.2.0/24", CgroupRoot: "/ms2m-node-b"},
		},
		Ports: Ports{APIServer: 6443, Etcd: 12379, EtcdPeer: 12380, Registry: 5055, AMQP: 5682, AMQPMgmt: 15682,
			AMQPDist: 25682, EPMD: 14369, ControllerMg: 10257, Scheduler: 10259},
	}
	ip := os.Getenv("MS2M_LAB_HOST_IP")
	if ip == "" {
		var err error
		if ip, err = hostIP(); err != nil {
			return nil, err
		}
	}
	c.HostIP = ip
	return c, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// hostIP picks the first global IPv4 address: pods cannot reach a host
// service on 127.0.0.1 (that is their own loopback), and the kubelet
// refuses a loopback node IP.
func hostIP() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.String(), nil
			}
		}
	}
	return "", errors.New("no global IPv4 address on this host: set MS2M_LAB_HOST_IP")
}

// Load reads the configuration `up` stored.
func Load(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no lab in %s: run `ms2m lab up`", dir)
	}
	if err != nil {
		return nil, err
	}
	var c Config
	return &c, json.Unmarshal(b, &c)
}

func (c *Config) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, "lab.json"), b, 0o644)
}

// Paths inside the state directory.
func (c *Config) path(p ...string) string { return filepath.Join(append([]string{c.Dir}, p...)...) }

// PKIDir holds the certificates and kubeconfigs.
func (c *Config) PKIDir() string { return c.path("pki") }

// Kubeconfig is the admin kubeconfig.
func (c *Config) Kubeconfig() string { return c.path("pki", "admin.kubeconfig") }

// RunDir holds the supervisor's socket and records.
func (c *Config) RunDir() string { return c.path("run") }

// LogDir holds every process's log.
func (c *Config) LogDir() string { return c.path("logs") }

// CapabilitiesFile is the capability report the controller and agents read.
func (c *Config) CapabilitiesFile() string { return c.path("capabilities.json") }

// HostRecordDir holds what the lab must restore on the host at `down`.
func (c *Config) HostRecordDir() string { return c.path("host") }

// Registry is the registry's address in image references. It is a
// loopback address on purpose: containerd restores a checkpoint by pulling
// its base image with its default resolver, which ignores the registry
// configuration (hosts.toml) and speaks plain HTTP to loopback registries
// only. The host, both containerds and host-network pods (the node agents)
// all reach it there, and go-containerregistry needs no insecure option.
func (c *Config) Registry() string { return fmt.Sprintf("127.0.0.1:%d", c.Ports.Registry) }

// RegistryFromPods is where pods on the pod network reach the registry.
func (c *Config) RegistryFromPods() string { return fmt.Sprintf("%s:%d", c.HostIP, c.Ports.Registry) }

// PauseImage is the sandbox image of both nodes.
func (c *Config) PauseImage() string { return c.Registry() + "/ms2m/pause:latest" }

// APIServerURL is the address host tools use.
func (c *Config) APIServerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.Ports.APIServer) }

// APIServerFromPods is where pods reach the API server. The lab runs no
// kube-proxy, so the kubernetes Service's ClusterIP leads nowhere: in-cluster
// clients of the lab (the controller, the agents) are given
// KUBERNETES_SERVICE_HOST/PORT pointing here; the serving certificate
// names the host IP.
func (c *Config) APIServerFromPods() string {
	return fmt.Sprintf("https://%s:%d", c.HostIP, c.Ports.APIServer)
}

// StagingDir is where a node's agent stages checkpoints for its runtime
// handler (the agent sees it under its host mount).
func (c *Config) StagingDir(node string) string { return filepath.Join("/var/lib/ms2m/staging", node) }

// AgentStateDir is where a node's agent keeps its operations and the
// checkpoints it received; ArchiveDir where it writes checkpoint archives.
func (c *Config) AgentStateDir(node string) string { return filepath.Join("/var/lib/ms2m/agent", node) }

// ArchiveDir: see AgentStateDir.
func (c *Config) ArchiveDir(node string) string { return filepath.Join("/var/lib/ms2m/dumps", node) }

// NodeHostDirs are a node's directories outside the lab's own: `down`
// removes them (a checkpoint is a workload's whole memory).
func (c *Config) NodeHostDirs(node string) []string {
	return []string{c.StagingDir(node), c.AgentStateDir(node), c.ArchiveDir(node)}
}

// DumpsDir is the agents' memory-backed dump directory (tmpfs, mounted
// by lab up); each node's agent dumps into its own subdirectory.
func (c *Config) DumpsDir() string { return filepath.Join(c.Dir, "dumps") }

// ContainerdBin is the directory of the nodes' containerd.
func (c *Config) ContainerdBin() string {
	if c.Runtime != nil {
		return c.Runtime.ContainerdBin
	}
	return c.Deps.ContainerdBin
}

// Runc is the nodes' runc.
func (c *Config) Runc() string {
	if c.Runtime != nil {
		return c.Runtime.Runc
	}
	return c.Deps.Runc
}

// PathDir holds what containerd's PATH must find first (the criu wrapper).
func (c *Config) PathDir() string { return c.path("bin") }

// ToolsDir holds kubectl-migrate (and kubectl, where the host has none);
// `ms2m lab env` puts it first in PATH.
func (c *Config) ToolsDir() string { return c.path("tools") }

// ControlPlane returns the control plane's parameters.
func (c *Config) ControlPlane() controlplane.Params {
	return controlplane.Params{
		Dir: c.path("cp"), PKI: c.PKIDir(), Bin: c.KubeBin, HostIP: c.HostIP,
		APIPort: c.Ports.APIServer, EtcdPort: c.Ports.Etcd, EtcdPeerPort: c.Ports.EtcdPeer,
		ServiceCIDR: c.ServiceCIDR, Logs: c.LogDir(),
	}
}

// NodeParams returns a node's parameters.
func (c *Config) NodeParams(n Node) node.Params {
	p := node.Params{
		Name: n.Name, Dir: c.path(n.Name), PKI: c.PKIDir(), HostIP: c.HostIP,
		KubeletPort: n.KubeletPort, HealthzPort: n.HealthzPort, Subnet: n.Subnet, CgroupRoot: n.CgroupRoot,
		PauseImage: c.PauseImage(), CertsDir: c.path("certs.d"), KubeBin: c.KubeBin, Logs: c.LogDir(),
		Path: c.PathDir() + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	if c.Deps != nil {
		p.CNIBin, p.Runc = c.Deps.CNIBin, c.Deps.Runc
	}
	if c.Runtime != nil {
		p.Runc = c.Runtime.Runc
	}
	if c.RuntimeHandler != "" {
		p.RuntimeHandlerBinary = c.RuntimeHandler
		p.StagingDir = c.StagingDir(n.Name)
	}
	return p
}

// RegistryParams returns the registry's parameters.
func (c *Config) RegistryParams() registry.Params {
	p := registry.Params{Dir: c.path("registry"), Addr: fmt.Sprintf(":%d", c.Ports.Registry), Log: filepath.Join(c.LogDir(), "registry.log")}
	if c.Deps != nil {
		p.Binary = c.Deps.Registry
	}
	return p
}

// RabbitMQ returns the broker's parameters.
func (c *Config) RabbitMQ() rabbitmq.Params {
	return rabbitmq.Params{Dir: c.path("rabbitmq"), Bind: c.HostIP, Port: c.Ports.AMQP, MgmtPort: c.Ports.AMQPMgmt,
		DistPort: c.Ports.AMQPDist, EPMDPort: c.Ports.EPMD, Log: filepath.Join(c.LogDir(), "rabbitmq.log"), Root: c.RabbitMQRoot}
}

// Subnets are the pod subnets of all nodes.
func (c *Config) Subnets() []string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.Subnet)
	}
	return s
}

// Env is what `ms2m lab env` prints, for other tools to eval.
func (c *Config) Env() []string {
	r := c.RabbitMQ()
	return []string{
		"export KUBECONFIG=" + c.Kubeconfig(),
		"export PATH=" + c.ToolsDir() + ":$PATH",
		"export MS2M_REGISTRY=" + c.Registry(),
		"export MS2M_REGISTRY_FROM_PODS=" + c.RegistryFromPods(),
		"export MS2M_APISERVER_FROM_PODS=" + c.APIServerFromPods(),
		"export MS2M_AMQP_URL=" + r.AMQPURL(),
		"export MS2M_RABBITMQ_MGMT_URL=" + r.MgmtURL(),
		"export MS2M_LAB_DIR=" + c.Dir,
		"export MS2M_LAB_CAPABILITIES=" + c.CapabilitiesFile(),
	}
}
