// Command ms2m-runtime is ms2m's OCI runtime handler: runc, except that a
// container for which the node's agent staged a checkpoint is restored
// from it. See internal/runtimehandler. Run by CRIU as an action script
// (through the script criuhook.Script writes), it is the freeze hook of
// internal/criuhook instead.
package main

import (
	"fmt"
	"os"

	"github.com/ms2m/ms2m/internal/criuhook"
	"github.com/ms2m/ms2m/internal/runtimehandler"
)

func main() {
	if os.Getenv(criuhook.EnvAction) != "" {
		os.Exit(criuhook.Main(os.Getenv, os.Stderr))
	}
	cfg, err := runtimehandler.LoadConfig(runtimehandler.ConfigPath(os.Args[0]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ms2m-runtime:", err)
		os.Exit(1)
	}
	h, err := runtimehandler.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ms2m-runtime:", err)
		os.Exit(1)
	}
	os.Exit(h.Main(os.Args[1:]))
}
