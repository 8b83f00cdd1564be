package tarball_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ms2m/ms2m/internal/tarball"
)

func TestWriteDirNamesEveryFileRelativeToTheDir(t *testing.T) {
	dir := t.TempDir()
	for p, body := range map[string]string{"index.json": "{}", "blobs/sha256/ab": "layer", "checkpoint/pages-1.img": "pages"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := tarball.WriteDir(&buf, dir); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	got := map[string]string{}
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names = append(names, h.Name)
		got[h.Name] = string(b)
	}
	if got["blobs/sha256/ab"] != "layer" || got["checkpoint/pages-1.img"] != "pages" || got["index.json"] != "{}" {
		t.Errorf("contents %v", got)
	}
	if !slices.Contains(names, "blobs/") || !slices.Contains(names, "blobs/sha256/") {
		t.Errorf("directories missing: %v", names)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteDir(io.Discard, dir); err == nil {
		t.Error("a symlink was archived: only files and directories are expected")
	}
}
