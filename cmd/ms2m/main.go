// Command ms2m runs the project's lab: a real two-node Kubernetes cluster on
// this machine, with a registry and RabbitMQ.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	// client-go logs cancelled requests when a command ends; the commands
	// report what matters themselves.
	klog.SetLogger(logr.Discard())
	// controller-runtime's client logs nothing the commands need either;
	// unset, it prints a stack trace saying so on first use.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{Use: "ms2m", Short: "Live migration of stateful, message-driven pods: the lab", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(labCommand(), demoCommand(), benchCommand(), runtimeHandlerCommand())
	return root
}
