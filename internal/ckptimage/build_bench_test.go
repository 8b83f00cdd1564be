package ckptimage_test

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/ms2m/ms2m/internal/ckptimage"
)

// benchSizes span the bench matrix's consumer states (1Mi, 64Mi; 512Mi is
// left to the lab: a checkpoint that size would dominate `go test -bench`).
var benchSizes = []int64{1 << 20, 16 << 20, 64 << 20}

// syntheticArchive writes a checkpoint archive of about size bytes shaped
// like the kubelet's. Its pages are random: a consumer's state does not
// compress, and compressible pages would flatter the gzip layer.
func syntheticArchive(b *testing.B, size int64) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "checkpoint.tar")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			b.Fatal(err)
		}
	}
	add("config.dump", []byte(`{"rootfsImageName":"registry.test/consumer:1"}`))
	add("spec.dump", []byte(`{"annotations":{"io.kubernetes.cri.sandbox-name":"consumer-0","io.kubernetes.cri.sandbox-namespace":"bench"}}`))
	pages := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(pages)
	add("checkpoint/pages-1.img", pages)
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

func sizeName(n int64) string { return fmt.Sprintf("%dMiB", n>>20) }

// BenchmarkBuild is wrapping an archive as a checkpoint image up to its
// digest: the layer is compressed and hashed once, as before any push.
func BenchmarkBuild(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			path := syntheticArchive(b, size)
			b.SetBytes(size)
			for b.Loop() {
				idx, err := ckptimage.Build(path, ckptimage.Options{ContainerName: "consumer"})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := idx.Digest(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildPush is the source agent's work in a Registry transfer:
// build the image and push it to a registry on loopback (in process, so
// that the registry's own cost stays small and the image path dominates).
// Each push goes to a fresh registry: one that holds the layer already
// would be asked for nothing but the manifest.
func BenchmarkBuildPush(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			path := syntheticArchive(b, size)
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
				b.StartTimer()
				idx, err := ckptimage.Build(path, ckptimage.Options{ContainerName: "consumer"})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ckptimage.Push(context.Background(), idx, strings.TrimPrefix(reg.URL, "http://")+"/bench/ckpt:1"); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				reg.Close()
				b.StartTimer()
			}
		})
	}
}
