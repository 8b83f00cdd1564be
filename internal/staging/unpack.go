package staging

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
)

// Unpack extracts a checkpoint archive, as the kubelet's checkpoint API
// writes it (gzipped or not), into dir, a directory from Begin. Entries
// cannot land outside dir.
func Unpack(ctx context.Context, ckpt io.Reader, dir string) error {
	r, err := compression.DecompressStream(ckpt)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := archive.Apply(ctx, dir, r); err != nil {
		return fmt.Errorf("unpacking the checkpoint archive: %w", err)
	}
	return nil
}
