package runtimehandler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"

	"github.com/ms2m/ms2m/internal/staging"
)

// ApplyRootfsChanges brings a fresh container root file system to where
// the checkpointed container's was: the files it wrote (containerd's
// rootfs-diff.tar, an OCI layer with whiteouts, gzipped or not) and the
// files it deleted (CRI-O's deleted.files). The checkpoint's memory refers
// to those files; without them the restore fails or the process finds
// stale ones.
func ApplyRootfsChanges(rootfs, staged string) error {
	if f, err := os.Open(filepath.Join(staged, staging.RootfsDiffTar)); err == nil {
		defer f.Close()
		r, err := compression.DecompressStream(f)
		if err != nil {
			return err
		}
		defer r.Close()
		// archive.Apply keeps every entry inside rootfs (symlinks in the
		// layer or in the base image cannot lead out of it).
		if _, err := archive.Apply(context.Background(), rootfs, r); err != nil {
			return fmt.Errorf("%s: %w", staging.RootfsDiffTar, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := os.ReadFile(filepath.Join(staged, staging.DeletedFiles))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var deleted []string
	if err := json.Unmarshal(b, &deleted); err != nil {
		return fmt.Errorf("%s: %w", staging.DeletedFiles, err)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, p := range deleted {
		rel := strings.TrimLeft(filepath.Clean("/"+p), "/")
		if rel == "" {
			continue
		}
		// os.Root refuses any path that resolves outside rootfs.
		if err := root.RemoveAll(rel); err != nil {
			return fmt.Errorf("deleting %s: %w", p, err)
		}
	}
	return nil
}
