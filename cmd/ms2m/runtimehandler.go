package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ms2m/ms2m/internal/criuhook"
	"github.com/ms2m/ms2m/internal/runtimehandler"
)

// runtimeHandlerCommand prints the configuration that installs ms2m's
// runtime handler on a node (see docs/runtime-handler.md).
func runtimeHandlerCommand() *cobra.Command {
	var in runtimehandler.Install
	var node string
	cmd := &cobra.Command{
		Use: "runtime-handler-config containerd|crio|handler|criu-hook",
		Example: `  ms2m runtime-handler-config containerd >> /etc/containerd/config.toml
  ms2m runtime-handler-config criu-hook > /usr/local/bin/ms2m-criu-hook`,
		Short:     "Print the configuration that registers ms2m's runtime handler with a node's runtime, the handler's own, or the freeze hook runc's CRIU configuration names (action-script)",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"containerd", "crio", "handler", "criu-hook"},
		RunE: func(_ *cobra.Command, args []string) error {
			in.StagingDir = strings.ReplaceAll(in.StagingDir, "{node}", node)
			switch args[0] {
			case "containerd":
				fmt.Print(in.ContainerdConfig())
			case "crio":
				fmt.Print(in.CRIOConfig())
			case "criu-hook":
				fmt.Print(criuhook.Script(in.Binary))
			case "handler":
				if node == "" {
					return fmt.Errorf("--node is needed: the staging directory is per node")
				}
				fmt.Print(in.HandlerConfig())
			default:
				return fmt.Errorf("%q: want containerd, crio, handler or criu-hook", args[0])
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Handler, "handler", "ms2m", "runtime handler name (the RuntimeClass's handler)")
	f.StringVar(&in.Binary, "binary", "/usr/local/bin/ms2m-runtime", "where ms2m-runtime is installed")
	f.StringVar(&in.Runc, "runc", "/usr/bin/runc", "the runc it hands calls to")
	f.StringVar(&in.RuncRoot, "runc-root", "/run/containerd/runc/k8s.io", "runc's state directory (containerd: the k8s.io namespace's; CRI-O: /run/runc)")
	f.StringVar(&in.StagingDir, "staging-dir", "/var/lib/ms2m/staging/{node}", "the node's staging directory, as the agent's --staging-dir")
	f.StringVar(&node, "node", "", "the node's name")
	f.BoolVar(&in.SystemdCgroup, "systemd-cgroup", true, "the kubelet uses the systemd cgroup driver (as the default runc handler's SystemdCgroup)")
	return cmd
}
