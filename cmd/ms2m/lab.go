package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/lab"
)

func labCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use: "lab",
		Example: `  ms2m lab up
  eval "$(ms2m lab env)"
  ms2m lab down`,
		Short: "A real two-node Kubernetes lab on this machine (MS2M_LAB_DIR, default /var/tmp/ms2m-lab)",
	}
	dir := func() string {
		c, err := lab.Default()
		if err != nil {
			return os.Getenv("MS2M_LAB_DIR")
		}
		return c.Dir
	}
	var repo, containerd string
	var noHandler bool
	up := &cobra.Command{
		Use: "up",
		Example: `  ms2m lab up
  ms2m lab up --containerd 2.1 --no-runtime-handler`,
		Short: "Bring the lab up (idempotent); the first run builds Kubernetes (~15 min)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lab.Default()
			if err != nil {
				return err
			}
			switch {
			case cmd.Flags().Changed("containerd"):
				c.Containerd = containerd
			case os.Getenv("MS2M_LAB_CONTAINERD") == "":
				// A lab that is up keeps the runtime it was brought up with.
				if prev, err := lab.Load(c.Dir); err == nil && prev.Containerd != "" {
					c.Containerd = prev.Containerd
				}
			}
			if err := lab.Up(cmd.Context(), c, lab.Options{Out: os.Stderr, Repo: repo, NoRuntimeHandler: noHandler}); err != nil {
				return err
			}
			fmt.Println(strings.Join(c.Env(), "\n"))
			return nil
		},
	}
	up.Flags().StringVar(&repo, "repo", "", "ms2m source tree (default: found from the working directory)")
	up.Flags().BoolVar(&noHandler, "no-runtime-handler", false, "leave ms2m's runtime handler off the nodes: migrations restore checkpoint images where containerd still does (2.1), and are refused elsewhere")
	up.Flags().StringVar(&containerd, "containerd", "", "containerd series of the nodes: 2.4 (containerd 2.4.2 + runc 1.5.3, built from the Go module proxy) or 2.1 (Debian's 2.1.9 + runc 1.1.5); default $MS2M_LAB_CONTAINERD, else the running lab's, else 2.4")

	var keep bool
	down := &cobra.Command{
		Use:     "down",
		Example: `  ms2m lab down`,
		Short:   "Stop the lab and leave the host as it was (also cleans a half-made lab)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(cmd.Context(), dir(), lab.Options{Out: os.Stderr}, keep)
		},
	}
	down.Flags().BoolVar(&keep, "keep-state", false, "keep the state directory (logs) after stopping")

	var asJSON bool
	status := &cobra.Command{
		Use:     "status",
		Example: `  ms2m lab status`,
		Short:   "What runs, what is unhealthy, and the capability report; exits 1 when unhealthy",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := lab.GetStatus(cmd.Context(), dir())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(s); err != nil {
					return err
				}
			} else {
				s.Print(os.Stdout)
			}
			if !s.Healthy {
				return errors.New("lab is unhealthy")
			}
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	env := &cobra.Command{
		Use:     "env",
		Example: `  eval "$(ms2m lab env)"; kubectl get nodes`,
		Short:   "Print the lab's addresses as shell exports: eval \"$(ms2m lab env)\"",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lab.Load(dir())
			if err != nil {
				return err
			}
			fmt.Println(strings.Join(c.Env(), "\n"))
			return nil
		},
	}

	var tag string
	var only []string
	imgs := &cobra.Command{
		Use:     "images",
		Example: `  ms2m lab images`,
		Short:   "Build the project's binaries (cmd/, examples/, lab apps) into images and push them to the lab registry",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lab.Load(dir())
			if err != nil {
				return err
			}
			_, err = lab.PushImages(cmd.Context(), c, repo, tag, only, os.Stdout)
			return err
		},
	}
	imgs.Flags().StringVar(&tag, "tag", "latest", "image tag")
	imgs.Flags().StringSliceVar(&only, "only", nil, "build only these apps")
	imgs.Flags().StringVar(&repo, "repo", "", "ms2m source tree")

	var out string
	snap := &cobra.Command{
		Use:     "snapshot",
		Example: `  ms2m lab snapshot`,
		Short:   "Record the host state the lab touches (mounts, cgroups, links, routes, netns, nft, sysctls, files) as JSON",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lab.Default()
			if err != nil {
				return err
			}
			s, err := lab.HostSnapshot(cmd.Context(), c)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(s, "", "  ")
			if out == "" || out == "-" {
				_, err = os.Stdout.Write(append(b, '\n'))
				return err
			}
			return os.WriteFile(out, b, 0o644)
		},
	}
	snap.Flags().StringVarP(&out, "output", "o", "", "file to write (default stdout)")
	deployCmd := &cobra.Command{
		Use:     "deploy",
		Example: `  ms2m lab deploy`,
		Short:   "Build the images and install ms2m (manager, agents, CRD) into the lab from config/",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lab.Load(dir())
			if err != nil {
				return err
			}
			_, err = lab.Deploy(cmd.Context(), c, repo, os.Stderr)
			return err
		},
	}
	cmd.AddCommand(deployCmd, up, down, status, env, imgs, snap)
	return cmd
}

// labWithMS2M brings the lab up (or, with noUp, takes it as it runs),
// deploys ms2m from the source tree repo, and returns the lab, the images
// it pushed and a client.
func labWithMS2M(ctx context.Context, noUp bool, repo string) (*lab.Config, map[string]string, client.Client, error) {
	c, err := lab.Default()
	if err != nil {
		return nil, nil, nil, err
	}
	if !noUp {
		if err := lab.Up(ctx, c, lab.Options{Out: os.Stderr, Repo: repo}); err != nil {
			return nil, nil, nil, err
		}
	} else if c, err = lab.Load(c.Dir); err != nil {
		return nil, nil, nil, err
	}
	images, err := lab.Deploy(ctx, c, repo, os.Stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	cl, err := c.Client()
	return c, images, cl, err
}
