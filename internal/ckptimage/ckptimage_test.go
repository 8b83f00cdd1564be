package ckptimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// archive writes a checkpoint archive shaped like containerd's.
func archive(t *testing.T, gz bool) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(body)
	}
	_ = tw.WriteHeader(&tar.Header{Name: "checkpoint/", Mode: 0o700, Typeflag: tar.TypeDir})
	add("checkpoint/pages-1.img", bytes.Repeat([]byte{7}, 64<<10))
	add("checkpoint/inventory.img", []byte("inv"))
	add("config.dump", []byte(`{"id":"abc","name":"counter","rootfsImageName":"192.0.2.2:5055/ms2m/counter:latest","rootfsImageRef":"sha256:1234"}`))
	spec, _ := json.Marshal(map[string]any{"annotations": map[string]string{
		"io.kubernetes.cri.sandbox-name": "counter-a", "io.kubernetes.cri.sandbox-namespace": "lab",
	}})
	add("spec.dump", spec)
	add("rootfs-diff.tar", make([]byte, 1024))
	_ = tw.Close()
	raw := buf.Bytes()
	out := raw
	if gz {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		_, _ = w.Write(raw)
		_ = w.Close()
		out = z.Bytes()
	}
	p := filepath.Join(t.TempDir(), "checkpoint.tar")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, raw
}

func TestBuildFormat(t *testing.T) {
	for _, gz := range []bool{false, true} {
		path, raw := archive(t, gz)
		created := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
		idx, err := Build(path, Options{ContainerName: "counter", Created: created, Annotations: map[string]string{"ms2m.io/migration": "m1"}})
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 1 {
			t.Fatalf("index %+v", im)
		}
		want := map[string]string{
			AnnotationContainerName: "counter",
			AnnotationCRIOLegacy:    "counter",
			AnnotationPod:           "counter-a",
			AnnotationNamespace:     "lab",
			AnnotationRootfsImage:   "192.0.2.2:5055/ms2m/counter:latest",
			AnnotationRootfsImageID: "sha256:1234",
			AnnotationCreated:       "2026-11-25T10:00:00Z",
			"ms2m.io/migration":     "m1",
		}
		d := im.Manifests[0]
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" || d.MediaType != types.OCIManifestSchema1 {
			t.Fatalf("index entry %+v", d)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			if im.Annotations[k] != v {
				t.Errorf("index annotation %s = %q, want %q", k, im.Annotations[k], v)
			}
			if m.Annotations[k] != v {
				t.Errorf("manifest annotation %s = %q, want %q", k, m.Annotations[k], v)
			}
		}
		if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer || m.Config.MediaType != types.OCIConfigJSON {
			t.Fatalf("manifest %+v", m)
		}
		cf, _ := img.ConfigFile()
		sum := sha256.Sum256(raw)
		if cf.RootFS.DiffIDs[0].Hex != hex.EncodeToString(sum[:]) {
			t.Fatalf("diff id %s is not the archive's sha256 (gz=%v)", cf.RootFS.DiffIDs[0], gz)
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Equal(created) {
			t.Fatalf("config %+v", cf)
		}
		layers, _ := img.Layers()
		rc, _ := layers[0].Uncompressed()
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, raw) {
			t.Fatal("the layer is not the archive")
		}
	}
}

func TestPushAndPullBack(t *testing.T) {
	path, _ := archive(t, false)
	idx, err := Build(path, Options{ContainerName: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/ms2m/counter-ckpt:1"
	dig, err := Push(context.Background(), idx, ref)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != types.OCIImageIndex || desc.Digest.String() != dig.DigestStr() {
		t.Fatalf("registry holds %s %s, pushed %s", desc.MediaType, desc.Digest, dig)
	}
	// What a runtime resolves for linux/amd64 carries the annotation.
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	if m.Annotations[AnnotationContainerName] != "counter" {
		t.Fatalf("platform manifest annotations %v", m.Annotations)
	}
}

func TestBuildNeedsAContainerName(t *testing.T) {
	path, _ := archive(t, false)
	if _, err := Build(path, Options{}); err == nil {
		t.Fatal("built without a container name")
	}
	if _, err := Build(filepath.Join(t.TempDir(), "missing.tar"), Options{ContainerName: "x"}); err == nil {
		t.Fatal("built from a missing archive")
	}
}
