package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// env is what every subcommand needs: a client and the namespace.
type env struct {
	flags *genericclioptions.ConfigFlags
	out   io.Writer
	now   func() time.Time
}

func (e *env) client() (client.Client, string, error) {
	cfg, err := e.flags.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := e.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	return c, ns, err
}

// NewCommand is `kubectl migrate`.
func NewCommand(out io.Writer) *cobra.Command {
	e := &env{flags: genericclioptions.NewConfigFlags(true), out: out, now: time.Now}
	root := &cobra.Command{
		Use:   "kubectl-migrate",
		Short: "Live-migrate stateful, message-driven pods between nodes with ms2m",
		Long: `kubectl migrate moves a running pod, with its memory and its message stream,
to another node: nothing lost, nothing applied twice, near-zero downtime.

  kubectl migrate pod consumer-0 --to node-b      start a migration
  kubectl migrate status consumer-0-x7k2q --watch  follow it
  kubectl migrate cancel consumer-0-x7k2q          roll it back
  kubectl migrate drain node-a                     drain a node, migrating the pods that opted in`,
		SilenceUsage: true,
	}
	e.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(newPodCommand(e), newStatusCommand(e), newCancelCommand(e), newDrainCommand(e))
	return root
}

// Main runs the plugin.
func Main() {
	// controller-runtime's client logs nothing a user needs here; unset,
	// it prints a stack trace saying so on first use.
	ctrllog.SetLogger(logr.Discard())
	if err := NewCommand(os.Stdout).ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
