package agent

import (
	"context"
	"fmt"
	"io"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// criNamespace is where the kubelet's images live in containerd.
const criNamespace = "k8s.io"

// Containerd hands Direct checkpoint images to the node's containerd, in
// the namespace the kubelet uses, unpacked, so the kubelet finds the image
// without pulling it.
type Containerd struct {
	Address string
	// Snapshotter the kubelet's containers use (default overlayfs).
	Snapshotter string
}

// Import loads an OCI archive named ref into containerd.
func (c Containerd) Import(ctx context.Context, oci io.Reader, ref string) error {
	cl, err := containerd.New(c.Address, containerd.WithDefaultNamespace(criNamespace))
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", c.Address, err)
	}
	defer cl.Close()
	imgs, err := cl.Import(ctx, oci, containerd.WithAllPlatforms(true))
	if err != nil {
		return err
	}
	for _, rec := range imgs {
		if rec.Name != ref {
			continue
		}
		// Unpacked like a pulled image: the runtime creates the restored
		// container on a snapshot of its layers.
		snap := c.Snapshotter
		if snap == "" {
			snap = "overlayfs"
		}
		if err := containerd.NewImage(cl, rec).Unpack(ctx, snap); err != nil {
			return fmt.Errorf("unpacking %s into %s: %w", ref, snap, err)
		}
		return nil
	}
	return fmt.Errorf("containerd imported %d image(s), none named %s", len(imgs), ref)
}

// Remove deletes the image; a missing image is fine.
func (c Containerd) Remove(ctx context.Context, ref string) error {
	cl, err := containerd.New(c.Address, containerd.WithDefaultNamespace(criNamespace))
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", c.Address, err)
	}
	defer cl.Close()
	err = cl.ImageService().Delete(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}
