// Package node describes one lab node: its own containerd (own root, state,
// socket and runc root) and its own kubelet, with its own cgroup root and
// pod subnet, so that two nodes share one host without seeing each other.
package node

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/ms2m/ms2m/internal/runtimehandler"
	"github.com/ms2m/ms2m/internal/staging"
)

// Params of one node.
type Params struct {
	Name        string
	Dir         string // state/NAME
	PKI         string
	HostIP      string
	KubeletPort int
	HealthzPort int
	Subnet      string // e.g. 10.88.1.0/24
	CgroupRoot  string // e.g. /ms2m-node-a
	// PauseImage is the sandbox image, pinned so that containerd never
	// looks for registry.k8s.io.
	PauseImage string
	CertsDir   string // containerd's registry hosts dir (hosts.toml per registry)
	CNIBin     string
	Runc       string
	// RuntimeHandlerBinary is ms2m's runtime handler (a runc wrapper that
	// restores staged checkpoints), linked into the node's directory beside
	// its own configuration; empty: the node has none.
	RuntimeHandlerBinary string
	// StagingDir is where the node's agent stages checkpoints for it.
	StagingDir string
	// Path is the PATH containerd and its shims get: runc finds criu there.
	Path    string
	KubeBin string
	Logs    string
}

// Socket is the node's containerd socket.
func (p Params) Socket() string { return filepath.Join(p.Dir, "containerd.sock") }

// NetworkName names the node's CNI network (and its libcni cache entries).
func (p Params) NetworkName() string { return p.Name + "-ptp" }

// Gateway is the host-side address of the node's pods' default route.
func (p Params) Gateway() string {
	ip, _, err := net.ParseCIDR(p.Subnet)
	if err != nil {
		return ""
	}
	ip = ip.To4()
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).String()
}

// ContainerdConfig lists only what differs from containerd's defaults.
// nri is off (both nodes would claim /var/run/nri/nri.sock), netns mounts
// live under the node's state, and the options the VM lacks privileges for
// (OOM score, hugetlb) are relaxed.
func (p Params) ContainerdConfig() string {
	d := p.Dir
	return fmt.Sprintf(`version = 3
root = '%[1]s/containerd/root'
state = '%[1]s/containerd/state'
disabled_plugins = ['io.containerd.internal.v1.opt', 'io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.blockfile', 'io.containerd.snapshotter.v1.erofs']

[grpc]
  address = '%[2]s'

[ttrpc]
  address = '%[2]s.ttrpc'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '%[3]s'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '%[4]s'

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '%[5]s'
        Root = '%[1]s/containerd/runc'
        SystemdCgroup = false
%[7]s  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['%[6]s']
    conf_dir = '%[1]s/cni.d'
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.transfer.v1.local']
  config_path = '%[4]s'
`, d, p.Socket(), p.PauseImage, p.CertsDir, p.Runc, p.CNIBin, p.runtimeHandlerConfig())
}

// RuntimeHandlerName is the containerd runtime handler (and RuntimeClass
// handler) of ms2m's runtime.
const RuntimeHandlerName = "ms2m"

// runtimeHandlerConfig registers ms2m's runtime as a runc-type handler:
// the runc shim runs it in place of runc, with the same runc root (a
// container it restored is checkpointed again like any other), and passes
// the pod's restore annotation through to the container's spec.
func (p Params) runtimeHandlerConfig() string {
	if p.RuntimeHandlerBinary == "" {
		return ""
	}
	return fmt.Sprintf(`    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%[3]s]
      runtime_type = 'io.containerd.runc.v2'
      pod_annotations = ['%[4]s']
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%[3]s.options]
        BinaryName = '%[2]s'
        Root = '%[1]s/containerd/runc'
        SystemdCgroup = false
`, p.Dir, p.RuntimeHandlerPath(), RuntimeHandlerName, staging.AnnotationRestore)
}

// RuntimeHandlerPath is the node's link to the runtime handler: the
// handler reads the configuration named like it (".json").
func (p Params) RuntimeHandlerPath() string { return filepath.Join(p.Dir, "ms2m-runtime") }

// RuntimeHandlerConfig is the handler's own configuration.
func (p Params) RuntimeHandlerConfig() string {
	return runtimehandler.Install{Runc: p.Runc, StagingDir: p.StagingDir}.HandlerConfig()
}

// CNIConfig is ptp + host-local: each pod gets a veth with a /32 route on
// the host, so pods of both nodes and the host reach each other without
// bridges, overlays or NAT rules.
func (p Params) CNIConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "%s",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "%s"}},
    {"type": "loopback"}
  ]
}
`, p.NetworkName(), p.Subnet, filepath.Join(p.Dir, "ipam"))
}

// KubeletConfig is the node's KubeletConfiguration. Kubernetes 1.37 refuses
// cgroup v1 unless failCgroupV1 is false; the chains of makeIPTablesUtilChains
// would be host-wide rules; eviction thresholds are low because the host's
// disk is shared with everything else. A crashing container is restarted
// within 5 s however often it crashed: the fault matrix kills the same
// containers again and again, and the default backoff, doubling to 5 min,
// would measure the kubelet rather than ms2m.
func (p Params) KubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: %s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
podLogsDir: %s
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true, cacheTTL: 10s}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
  webhook: {cacheAuthorizedTTL: 10s, cacheUnauthorizedTTL: 5s}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
maxPods: 50
resolvConf: /etc/resolv.conf
nodeStatusReportFrequency: 10s
syncFrequency: 10s
makeIPTablesUtilChains: false
crashLoopBackOff: {maxContainerRestartPeriod: 5s}
`, p.KubeletPort, p.HealthzPort, p.Socket(), p.Socket(), p.CgroupRoot,
		filepath.Join(p.Dir, "pod-logs"),
		filepath.Join(p.PKI, p.Name+"-serving.crt"), filepath.Join(p.PKI, p.Name+"-serving.key"),
		filepath.Join(p.PKI, "ca.crt"))
}

// HostsTOML makes containerd pull from the lab registry over plain HTTP.
func HostsTOML(registry string) string {
	return fmt.Sprintf(`server = "http://%[1]s"

[host."http://%[1]s"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
`, registry)
}

// KubeletArgs are the kubelet's flags. The node registers under its own
// name on the host IP (the kubelet refuses a loopback node IP).
func (p Params) KubeletArgs() []string {
	return []string{
		"--config=" + filepath.Join(p.Dir, "kubelet", "config.yaml"),
		"--kubeconfig=" + filepath.Join(p.PKI, p.Name+".kubeconfig"),
		"--root-dir=" + filepath.Join(p.Dir, "kubelet", "root"),
		"--hostname-override=" + p.Name,
		"--node-ip=" + p.HostIP,
		"--node-labels=ms2m.io/lab-node=" + p.Name,
		"--v=1",
	}
}

// Env of containerd and the kubelet: PATH puts the lab's criu wrapper
// first; TMPDIR keeps the temporary mounts containerd makes while it
// checkpoints and restores inside the node's directory, where `down`
// finds them.
func (p Params) Env() []string {
	return []string{"PATH=" + p.Path, "HOME=/root", "LANG=C.UTF-8", "TMPDIR=" + filepath.Join(p.Dir, "tmp")}
}
