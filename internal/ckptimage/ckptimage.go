// Package ckptimage wraps a container checkpoint archive, as the kubelet's
// checkpoint API writes it, into an OCI image that container runtimes
// restore from: creating a container whose image is such an image restores
// the checkpoint instead of starting the image afresh.
//
// The image has a single layer, the archive itself (checkpoint/,
// config.dump, spec.dump, rootfs-diff.tar, ...), and carries the
// org.criu.checkpoint.* annotations on both its manifest and its index:
// containerd 2.x recognises a checkpoint image by the container-name
// annotation, CRI-O by the same annotation (older releases by
// io.kubernetes.cri-o.annotations.checkpoint.name, also set).
package ckptimage

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of checkpoint images (checkpointctl's metadata names).
const (
	AnnotationContainerName = "org.criu.checkpoint.container.name"
	AnnotationEngine        = "org.criu.checkpoint.engine.name"
	AnnotationPod           = "org.criu.checkpoint.pod.name"
	AnnotationNamespace     = "org.criu.checkpoint.pod.namespace"
	AnnotationRootfsImage   = "org.criu.checkpoint.rootfsImageName"
	AnnotationRootfsImageID = "org.criu.checkpoint.rootfsImageID"
	AnnotationRuntime       = "org.criu.checkpoint.runtime.name"
	// AnnotationCRIOLegacy is what CRI-O releases before the shared
	// annotations looked for.
	AnnotationCRIOLegacy = "io.kubernetes.cri-o.annotations.checkpoint.name"
	AnnotationCreated    = "org.opencontainers.image.created"
)

// Options of Build.
type Options struct {
	// ContainerName is the checkpointed container's name; required.
	ContainerName string
	// Annotations are added to (and override) what Build derives.
	Annotations map[string]string
	// Created stamps the image; zero means now.
	Created time.Time
	// Level is the gzip level of the layer; zero means the fastest (the
	// archive is mostly memory pages and is pushed right away).
	Level int
	// Encrypted: the file is the archive encrypted (internal/ckptcrypt),
	// which only ms2m's agents read: the image carries no metadata read
	// from it, and no runtime restores it by itself.
	Encrypted bool
}

// Build makes the checkpoint image of the archive at path.
func Build(path string, o Options) (v1.ImageIndex, error) {
	if o.ContainerName == "" {
		return nil, errors.New("ckptimage: the container name is required")
	}
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	if o.Level == 0 {
		o.Level = gzip.BestSpeed
	}
	var meta Metadata
	if !o.Encrypted {
		m, err := ReadMetadata(path)
		if err != nil {
			return nil, err
		}
		meta = m
	}
	ann := map[string]string{
		AnnotationContainerName: o.ContainerName,
		AnnotationCRIOLegacy:    o.ContainerName,
		AnnotationCreated:       o.Created.UTC().Format(time.RFC3339),
	}
	for k, v := range meta.Annotations() {
		ann[k] = v
	}
	for k, v := range o.Annotations {
		ann[k] = v
	}
	layer, err := tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(o.Level))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "ms2m checkpoint " + o.ContainerName}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: o.Created}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	img = mutate.Annotations(img, ann).(v1.Image)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
	})
	return mutate.Annotations(idx, ann).(v1.ImageIndex), nil
}

// Push uploads the checkpoint image as ref (plain HTTP allowed) and returns
// the index's digest reference.
func Push(ctx context.Context, idx v1.ImageIndex, ref string, opts ...remote.Option) (name.Digest, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.WriteIndex(r, idx, append([]remote.Option{remote.WithContext(ctx)}, opts...)...); err != nil {
		return name.Digest{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return r.Context().Digest(d.String()), nil
}

// Delete removes a pushed checkpoint image from its registry: the index
// and every manifest in it. Deleting the index alone would leave the
// manifest, and with it the layer that holds the workload's memory,
// reachable in the repository. What is gone already is not an error.
func Delete(ctx context.Context, ref string, opts ...remote.Option) error {
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return err
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	idx, err := remote.Index(d, opts...)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, m := range im.Manifests {
		if err := remote.Delete(d.Context().Digest(m.Digest.String()), opts...); err != nil && !isNotFound(err) {
			// The index stays until its manifests are gone: it is how a
			// retry finds them.
			return refused(err)
		}
	}
	if err := remote.Delete(d, opts...); err != nil && !isNotFound(err) {
		return refused(err)
	}
	return nil
}

// ErrDeleteRefused: the registry does not allow deletes (the distribution
// server without storage.delete.enabled answers 405).
var ErrDeleteRefused = errors.New("the registry refuses to delete images")

func refused(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusMethodNotAllowed {
		return fmt.Errorf("%w: %v", ErrDeleteRefused, err)
	}
	return err
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// Metadata is what the archive says about the checkpointed container.
type Metadata struct {
	Pod, Namespace, RootfsImage, RootfsImageID string
	Engine                                     string
}

// Annotations maps the known metadata to annotations.
func (m Metadata) Annotations() map[string]string {
	a := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set(AnnotationPod, m.Pod)
	set(AnnotationNamespace, m.Namespace)
	set(AnnotationRootfsImage, m.RootfsImage)
	set(AnnotationRootfsImageID, m.RootfsImageID)
	set(AnnotationEngine, m.Engine)
	return a
}

// ReadMetadata reads config.dump and spec.dump from the archive; an archive
// without them is still a valid layer, its metadata just stays empty.
func ReadMetadata(path string) (Metadata, error) {
	f, err := os.Open(path)
	if err != nil {
		return Metadata{}, err
	}
	defer f.Close()
	var r io.Reader = f
	var magic [2]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && magic == [2]byte{0x1f, 0x8b} {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return Metadata{}, err
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			return Metadata{}, err
		}
		r = gz
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Metadata{}, err
	}
	var m Metadata
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return m, fmt.Errorf("checkpoint archive %s: %w", path, err)
		}
		switch h.Name {
		case "config.dump", "./config.dump":
			var c struct {
				RootfsImageName string `json:"rootfsImageName"`
				RootfsImageRef  string `json:"rootfsImageRef"`
				RootfsImage     string `json:"rootfsImage"`
				Engine          string `json:"engine"`
			}
			if json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&c) == nil {
				m.RootfsImage = first(c.RootfsImageName, c.RootfsImage)
				m.RootfsImageID = c.RootfsImageRef
				m.Engine = c.Engine
			}
		case "spec.dump", "./spec.dump":
			var s struct {
				Annotations map[string]string `json:"annotations"`
			}
			if json.NewDecoder(io.LimitReader(tr, 4<<20)).Decode(&s) == nil {
				m.Pod = first(s.Annotations["io.kubernetes.cri.sandbox-name"], s.Annotations["io.kubernetes.pod.name"])
				m.Namespace = first(s.Annotations["io.kubernetes.cri.sandbox-namespace"], s.Annotations["io.kubernetes.pod.namespace"])
				if m.RootfsImage == "" {
					m.RootfsImage = s.Annotations["io.kubernetes.cri.image-name"]
				}
			}
		}
	}
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Fetch opens the checkpoint archive inside a pushed checkpoint image (the
// index Build makes, or its manifest): the single layer, uncompressed.
// The registry checks each blob's digest against the reference, so what
// comes back is what was pushed under that digest.
func Fetch(ctx context.Context, ref string, opts ...remote.Option) (io.ReadCloser, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", ref, err)
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		if len(im.Manifests) != 1 {
			return nil, fmt.Errorf("%s: a checkpoint image index has one manifest, this one %d", ref, len(im.Manifests))
		}
		if img, err = idx.Image(im.Manifests[0].Digest); err != nil {
			return nil, err
		}
	} else if img, err = desc.Image(); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("%s: a checkpoint image has one layer, this one %d", ref, len(layers))
	}
	return layers[0].Uncompressed()
}
