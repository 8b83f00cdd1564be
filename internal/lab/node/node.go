package node

import (
	"os"
	"path/filepath"

	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// Prepare writes the node's configuration files and creates its cgroup
// root.
func Prepare(p Params) error {
	for _, d := range []string{"containerd", "cni.d", "ipam", "kubelet/root", "pod-logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd/config.toml":                    p.ContainerdConfig(),
		"cni.d/10-" + p.NetworkName() + ".conflist": p.CNIConfig(),
		"kubelet/config.yaml":                       p.KubeletConfig(),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(p.Dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if p.RuntimeHandlerBinary != "" {
		link := p.RuntimeHandlerPath()
		_ = os.Remove(link)
		// Relative, so that it also resolves where the host is mounted
		// elsewhere (the agent checks it under its host mount).
		target, err := filepath.Rel(filepath.Dir(link), p.RuntimeHandlerBinary)
		if err != nil {
			target = p.RuntimeHandlerBinary
		}
		if err := os.Symlink(target, link); err != nil {
			return err
		}
		if err := os.WriteFile(link+".json", []byte(p.RuntimeHandlerConfig()), 0o644); err != nil {
			return err
		}
		if err := os.MkdirAll(p.StagingDir, 0o700); err != nil {
			return err
		}
	}
	return CreateCgroupRoot(p.CgroupRoot)
}

// Containerd is the node's containerd process.
func Containerd(p Params, bin string) supervise.Spec {
	return supervise.Spec{
		Name: "containerd-" + p.Name, Path: filepath.Join(bin, "containerd"),
		Args: []string{"--config", filepath.Join(p.Dir, "containerd", "config.toml")},
		Env:  p.Env(), Dir: p.Dir, Log: filepath.Join(p.Logs, "containerd-"+p.Name+".log"), Restart: true,
	}
}

// Kubelet is the node's kubelet process.
func Kubelet(p Params) supervise.Spec {
	return supervise.Spec{
		Name: "kubelet-" + p.Name, Path: filepath.Join(p.KubeBin, "kubelet"), Args: p.KubeletArgs(),
		Env: p.Env(), Dir: p.Dir, Log: filepath.Join(p.Logs, "kubelet-"+p.Name+".log"), Restart: true,
	}
}
