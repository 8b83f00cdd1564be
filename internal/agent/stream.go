package agent

import (
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/ms2m/ms2m/internal/tarball"
)

type v1Update = v1.Update

func forwardProgress(updates <-chan v1.Update, progress progressFunc) {
	for u := range updates {
		progress(u.Complete, u.Total)
	}
}

// countingReader reports how much of a stream has been read.
type countingReader struct {
	r        io.Reader
	done     int64
	total    int64
	progress progressFunc
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.done += int64(n)
	c.progress(c.done, c.total)
	return n, err
}

func writeFileAtomic(path string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".part"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// writeOCIArchive writes idx as an OCI image layout in a tar stream, named
// ref for the runtime that imports it. The OCI layout keeps the checkpoint
// annotations on index and manifest, which a docker archive would drop and
// without which the runtime would start the image instead of restoring it.
func writeOCIArchive(w io.Writer, idx v1.ImageIndex, ref string) error {
	dir, err := os.MkdirTemp("", "ms2m-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	ann := map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": ref,
	}
	for k, v := range m.Annotations {
		ann[k] = v
	}
	err = p.AppendIndex(idx, layout.WithAnnotations(ann))
	if err != nil {
		return err
	}
	return tarball.WriteDir(w, dir)
}
