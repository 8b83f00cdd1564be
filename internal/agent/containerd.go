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

// Version is containerd's release ("2.4.2").
func (c Containerd) Version(ctx context.Context) (string, error) {
	cl, err := containerd.New(c.Address, containerd.WithDefaultNamespace(criNamespace))
	if err != nil {
		return "", fmt.Errorf("containerd at %s: %w", c.Address, err)
	}
	defer cl.Close()
	v, err := cl.Version(ctx)
	if err != nil {
		return "", err
	}
	return v.Version, nil
}

// Remove deletes the image with every other name of it: the kubelet's
// runtime also records a pulled image under its ID ("sha256:..."), which
// would keep the content alive. A missing image is fine; containerd's
// garbage collector frees the content and, once no container uses it, the
// snapshot.
func (c Containerd) Remove(ctx context.Context, ref string) error {
	cl, err := containerd.New(c.Address, containerd.WithDefaultNamespace(criNamespace))
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", c.Address, err)
	}
	defer cl.Close()
	is := cl.ImageService()
	img, err := is.Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	same, err := is.List(ctx, "target.digest=="+img.Target.Digest.String())
	if err != nil {
		return err
	}
	// The name asked for goes last: it is how a retry finds the others.
	for _, i := range same {
		if i.Name == ref {
			continue
		}
		if err := is.Delete(ctx, i.Name); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	if err := is.Delete(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}
