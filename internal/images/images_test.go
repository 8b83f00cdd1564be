package images

import (
	"archive/tar"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestFromBinaryPushesARunnableLayout(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(bin, []byte("\x7fELF fake binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := FromBinary(bin, "hello")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := FromBinary(bin, "hello")
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Fatalf("the same binary gave two digests: %s %s", d1, d2)
	}
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	reg := strings.TrimPrefix(srv.URL, "http://")
	ref := Reference(reg, "hello", "latest")
	dig, err := Push(context.Background(), img, ref)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Ref(ref)
	got, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	if gd, _ := got.Digest(); gd.String() != dig.DigestStr() {
		t.Fatalf("pulled %s, pushed %s", gd, dig)
	}
	if mt, _ := got.MediaType(); mt != types.OCIManifestSchema1 {
		t.Fatalf("manifest media type %s", mt)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/hello" ||
		!slices.Contains(cf.Config.Env, "GODEBUG=multipathtcp=0") {
		t.Fatalf("config %+v", cf)
	}
	layers, _ := got.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	rc, _ := layers[0].Uncompressed()
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "usr/local/bin/hello" {
			found = h.Mode == 0o755
			b, _ := io.ReadAll(tr)
			if string(b) != "\x7fELF fake binary" {
				t.Fatalf("binary content %q", b)
			}
		}
		if h.Name == "tmp/" && h.Mode != 0o1777 {
			t.Fatalf("/tmp mode %o", h.Mode)
		}
	}
	if !found {
		t.Fatal("binary missing or not executable")
	}
}

func TestDiscoverFindsTheLabApps(t *testing.T) {
	apps, err := Discover(context.Background(), "../..")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, a := range apps {
		have[a.Name] = a.Package
	}
	for _, want := range []string{"pause", "counter"} {
		if have[want] == "" {
			t.Fatalf("Discover = %v, lacks %s", apps, want)
		}
	}
	if have["ms2m"] != "" {
		t.Fatal("the host CLI got an image")
	}
}
