// Package images builds OCI images from the project's static Go binaries
// without a container engine: one layer holding the binary, an entrypoint,
// pushed with go-containerregistry to a plain-HTTP registry.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// App is a main package built into an image of the same name.
type App struct {
	Name    string `json:"name"`
	Package string `json:"package"` // import path
}

// Roots are where Discover looks for main packages: whatever mains appear
// there later get an image without a change here.
var Roots = []string{"./cmd/...", "./examples/...", "./internal/lab/apps/..."}

// hostOnly are mains that run on the host, never in a pod.
var hostOnly = map[string]bool{"ms2m": true, "kubectl-migrate": true}

// Discover lists the main packages under Roots of the module at dir.
func Discover(ctx context.Context, dir string) ([]App, error) {
	args := append([]string{"list", "-e", "-f", "{{.Name}} {{.ImportPath}}"}, Roots...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.String())
	}
	var apps []App
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] != "main" {
			continue
		}
		n := path.Base(f[1])
		if hostOnly[n] {
			continue
		}
		apps = append(apps, App{Name: n, Package: f[1]})
	}
	return apps, nil
}

// Build compiles app as a static binary into outDir.
func Build(ctx context.Context, dir string, app App, outDir string) (string, error) {
	out := filepath.Join(outDir, app.Name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, app.Package)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", app.Package, err, b)
	}
	return out, nil
}

// BinDir is where binaries sit in the image.
const BinDir = "/usr/local/bin"

// epoch keeps layers reproducible: the same binary gives the same digest.
var epoch = time.Unix(0, 0)

// FromBinary makes a single-layer OCI image whose entrypoint is the binary.
func FromBinary(bin, name string) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []struct {
		name string
		mode int64
	}{{"usr/", 0o755}, {"usr/local/", 0o755}, {"usr/local/bin/", 0o755}, {"tmp/", 0o1777}, {"etc/", 0o755}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinDir, "/") + "/" + name, Mode: 0o755, Size: int64(len(b)), ModTime: epoch}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{BinDir + "/" + name}
	// Go 1.24+ listens with MPTCP by default, and CRIU cannot dump MPTCP
	// sockets ("Unsupported proto 262"): every image of the project may
	// be checkpointed.
	cf.Config.Env = []string{"PATH=" + BinDir + ":/usr/bin:/bin", "GODEBUG=multipathtcp=0"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// Ref parses an image reference; the lab's registry speaks plain HTTP.
func Ref(ref string) (name.Reference, error) {
	return name.ParseReference(ref, name.Insecure)
}

// Push uploads img as ref and returns its digest reference.
func Push(ctx context.Context, img v1.Image, ref string) (name.Digest, error) {
	r, err := Ref(ref)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return name.Digest{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return r.Context().Digest(d.String()), nil
}

// BuildAndPush builds app and pushes it as registry/ms2m/NAME:tag.
func BuildAndPush(ctx context.Context, dir string, app App, registry, tag, work string) (name.Digest, error) {
	bin, err := Build(ctx, dir, app, work)
	if err != nil {
		return name.Digest{}, err
	}
	img, err := FromBinary(bin, app.Name)
	if err != nil {
		return name.Digest{}, err
	}
	return Push(ctx, img, Reference(registry, app.Name, tag))
}

// Reference names an app's image in a registry.
func Reference(registry, app, tag string) string {
	return fmt.Sprintf("%s/ms2m/%s:%s", registry, app, tag)
}
