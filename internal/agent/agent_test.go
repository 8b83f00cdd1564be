package agent_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ms2m/ms2m/internal/agent"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/ckptimage"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/staging"
)

// Two agents talk over real mutual TLS on loopback, push to a real (in
// process) OCI registry and stream to each other. The kubelet is played by
// a checkpointer that writes an archive shaped like the kubelet's, and the
// container runtime by an importer that unpacks what it is given: both are
// exercised for real in the lab e2e.

type kubelet struct {
	dir   string
	calls atomic.Int32
	// gate, if set, holds each dump until it is closed.
	gate chan struct{}
}

func (k *kubelet) Name() agentapi.CheckpointEngine { return agentapi.EngineKubelet }

func (k *kubelet) Release(context.Context, string) error { return nil }
func (k *kubelet) Kill(context.Context, string) error    { return nil }

func (k *kubelet) Checkpoint(_ context.Context, c engine.Container, _ engine.Options) (engine.Result, error) {
	ns, pod, ctr := c.Namespace, c.Pod, c.Name
	k.calls.Add(1)
	if k.gate != nil {
		<-k.gate
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body []byte) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(body)
	}
	add("checkpoint/inventory.img", []byte("inventory"))
	add("checkpoint/pages-1.img", bytes.Repeat([]byte{9}, 256<<10))
	add("config.dump", []byte(`{"rootfsImageName":"registry.test/consumer:1"}`))
	spec, _ := json.Marshal(map[string]any{"annotations": map[string]string{"io.kubernetes.cri.sandbox-name": pod, "io.kubernetes.cri.sandbox-namespace": ns}})
	add("spec.dump", spec)
	_ = tw.Close()
	p := filepath.Join(k.dir, "checkpoint-"+pod+"_"+ns+"-"+ctr+".tar")
	return engine.Result{Archive: p}, os.WriteFile(p, buf.Bytes(), 0o600)
}

type runtime struct {
	mu       sync.Mutex
	imported map[string][]byte // ref → index.json
	removed  []string
}

func (r *runtime) Import(_ context.Context, oci io.Reader, ref string) error {
	tr := tar.NewReader(oci)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return errors.New("OCI archive without index.json")
		}
		if err != nil {
			return err
		}
		if h.Name == "index.json" {
			b, _ := io.ReadAll(tr)
			_, _ = io.Copy(io.Discard, oci)
			r.mu.Lock()
			r.imported[ref] = b
			r.mu.Unlock()
			return nil
		}
	}
}

func (r *runtime) Remove(_ context.Context, ref string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, ref)
	return nil
}

type staticResolver map[string]string

func (s staticResolver) Endpoint(_ context.Context, node string) (string, error) {
	if u, ok := s[node]; ok {
		return u, nil
	}
	return "", agentapi.ErrNoAgent
}

// agentTLS is node's agent's TLS configuration, with a certificate from ca
// as the manager's signer issues it.
func agentTLS(t *testing.T, ca *identity.CA, node string) *tls.Config {
	t.Helper()
	cert := agentCert(t, ca, node)
	return identity.PeerTLS(ca.Pool(), func() (*tls.Certificate, error) { return cert, nil })
}

func agentCert(t *testing.T, ca *identity.CA, node string) *tls.Certificate {
	t.Helper()
	cert, err := ca.AgentCertificate(node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

type cluster struct {
	client   *agentclient.Client
	kubelet  *kubelet
	runtime  *runtime
	registry string
	ca       *identity.CA
	// staging is each node's staging tree for the runtime handler.
	staging map[string]staging.Layout
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterWith(t, true)
}

// newClusterWith lets the agents use the test's plain-HTTP registry if
// plainHTTP, as a cluster admin's --plain-http-registry does.
func newClusterWith(t *testing.T, plainHTTP bool, configure ...func(node string, cfg *agent.Config)) *cluster {
	t.Helper()
	ca, err := identity.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{ca: ca, kubelet: &kubelet{dir: t.TempDir()}, runtime: &runtime{imported: map[string][]byte{}},
		staging: map[string]staging.Layout{}}
	reg := httptest.NewServer(registry.New())
	t.Cleanup(reg.Close)
	c.registry = strings.TrimPrefix(reg.URL, "http://")
	resolver := staticResolver{}
	criu := filepath.Join(t.TempDir(), "runc.conf")
	_ = os.WriteFile(criu, []byte("tcp-close\nskip-in-flight\nnetwork-lock nftables\n"), 0o644)
	for _, node := range []string{"node-a", "node-b"} {
		layout := staging.Layout{Dir: t.TempDir()}
		c.staging[node] = layout
		handler := filepath.Join(t.TempDir(), "ms2m-runtime")
		_ = os.WriteFile(handler, []byte("#!/bin/sh\n"), 0o755)
		cert := agentCert(t, ca, node)
		tlsCfg := identity.PeerTLS(ca.Pool(), func() (*tls.Certificate, error) { return cert, nil })
		var reg agent.Registry
		if plainHTTP {
			reg.PlainHTTP = []string{c.registry}
		}
		cfg := agent.Config{Node: node, StateDir: t.TempDir(), Kubelet: c.kubelet, Runtime: c.runtime, Registry: reg,
			Identity: func() *tls.Certificate { return cert }, Trust: ca.Pool(),
			Peers: agentclient.New(resolver, tlsCfg), CRIUConfig: criu, Staging: &layout, RuntimeHandler: agent.RuntimeHandler{Name: "ms2m", Binary: handler},
			RuntimeVersion: func(context.Context) (string, error) { return "2.4.2", nil }}
		for _, f := range configure {
			f(node, &cfg)
		}
		srv, err := agent.NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewUnstartedServer(srv.Handler())
		hs.TLS = tlsCfg.Clone()
		hs.StartTLS()
		t.Cleanup(hs.Close)
		resolver[node] = hs.URL
	}
	c.client = agentclient.New(resolver, identity.ManagerTLS(ca))
	return c
}

func poll[R any](t *testing.T, call func() (agentapi.Operation[R], error)) agentapi.Operation[R] {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		op, err := call()
		if err != nil {
			t.Fatal(err)
		}
		if op.State != agentapi.OpRunning || time.Now().After(deadline) {
			return op
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckpointTransferAndCleanup(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	if _, err := c.client.Ready(ctx, "node-a"); err != nil {
		t.Fatalf("ready: %v", err)
	}
	req := agentapi.CheckpointRequest{ID: "mig-1234", Namespace: "shop", Pod: "consumer-0", Container: "app"}
	ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", req)
	})
	if ck.State != agentapi.OpSucceeded || ck.Result.SizeBytes == 0 {
		t.Fatalf("checkpoint %+v", ck)
	}
	again, _ := c.client.Checkpoint(ctx, "node-a", req)
	if c.kubelet.calls.Load() != 1 || again.Result.Archive != ck.Result.Archive {
		t.Fatalf("a repeated request checkpointed again (%d kubelet calls)", c.kubelet.calls.Load())
	}

	// Registry: the image is in the registry, annotated for the runtimes.
	reg := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
		return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: "mig-1234-reg", CheckpointID: "mig-1234",
			Mode: agentapi.TransferRegistry, Repository: c.registry + "/ckpt", TargetNode: "node-b", Container: "app"})
	})
	if reg.State != agentapi.OpSucceeded || !strings.Contains(reg.Result.Image, "@sha256:") || reg.Progress.BytesDone == 0 {
		t.Fatalf("registry transfer %+v", reg)
	}
	ref, _ := name.ParseReference(reg.Result.Image, name.Insecure)
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("pulling back %s: %v", reg.Result.Image, err)
	}
	m, _ := idx.IndexManifest()
	if m.Annotations[ckptimage.AnnotationContainerName] != "app" || m.Annotations[ckptimage.AnnotationPod] != "consumer-0" {
		t.Fatalf("index annotations %v", m.Annotations)
	}

	// Direct: the archive goes to node-b's agent, which hands node-b's
	// runtime an OCI image named for the kubelet.
	if err := c.client.Expect(ctx, "node-b", "mig-1234", agentapi.ExpectRequest{SourceNode: "node-a"}); err != nil {
		t.Fatal(err)
	}
	dir := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
		return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: "mig-1234", CheckpointID: "mig-1234",
			Mode: agentapi.TransferDirect, TargetNode: "node-b", Container: "app"})
	})
	if dir.State != agentapi.OpSucceeded || dir.Result.Image != agent.DirectImageRef("mig-1234") || dir.Progress.BytesDone != ck.Result.SizeBytes {
		t.Fatalf("direct transfer %+v", dir)
	}
	c.runtime.mu.Lock()
	index := c.runtime.imported[dir.Result.Image]
	c.runtime.mu.Unlock()
	var layoutIndex struct {
		Manifests []struct{ Annotations map[string]string }
	}
	if err := json.Unmarshal(index, &layoutIndex); err != nil || len(layoutIndex.Manifests) != 1 {
		t.Fatalf("imported OCI layout index: %v: %s", err, index)
	}
	if a := layoutIndex.Manifests[0].Annotations; a["io.containerd.image.name"] != dir.Result.Image || a[ckptimage.AnnotationContainerName] != "app" {
		t.Fatalf("imported image lacks its name or the checkpoint annotation: %v", a)
	}

	for _, node := range []string{"node-a", "node-b"} {
		// node-b's kubelet pulled the registry image too: it goes with the rest.
		if err := c.client.Cleanup(ctx, node, "mig-1234", reg.Result.Image); err != nil {
			t.Fatalf("cleanup on %s: %v", node, err)
		}
	}
	if _, err := os.Stat(ck.Result.Archive); !os.IsNotExist(err) {
		t.Errorf("checkpoint archive left on node-a: %v", err)
	}
	if err := c.client.Cleanup(ctx, "node-a", "mig-1234-reg", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Index(ref); err == nil {
		t.Errorf("registry still serves %s after cleanup", ref)
	}
	// The manifest, which holds the memory layer, goes with its index.
	child := ref.Context().Digest(m.Manifests[0].Digest.String())
	if _, err := remote.Image(child); err == nil {
		t.Errorf("registry still serves the checkpoint's manifest %s after cleanup", child)
	}
	c.runtime.mu.Lock()
	removed := c.runtime.removed
	c.runtime.mu.Unlock()
	if !slices.Contains(removed, dir.Result.Image) || !slices.Contains(removed, reg.Result.Image) {
		t.Errorf("runtime images removed %v, want the received %s and the pulled %s", removed, dir.Result.Image, reg.Result.Image)
	}
}

// The target node's agent stages a checkpoint for ms2m's runtime handler,
// from the registry or from what a Direct transfer brought it, once per
// checkpoint: a container that consumed it cannot have it staged again.
func TestStageForTheRuntimeHandler(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	rep, err := c.client.Ready(ctx, "node-b")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restore.RuntimeHandler != "ms2m" || rep.Restore.CheckpointImage || !strings.Contains(rep.Restore.CheckpointImageReason, "2.4.2") {
		t.Fatalf("restore capabilities %+v", rep.Restore)
	}
	for _, mode := range []agentapi.TransferMode{agentapi.TransferRegistry, agentapi.TransferDirect} {
		id := "mig-9-" + strings.ToLower(string(mode))
		ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
			return c.client.Checkpoint(ctx, "node-a", agentapi.CheckpointRequest{ID: id, Namespace: "shop", Pod: "consumer-0", Container: "app"})
		})
		if ck.State != agentapi.OpSucceeded {
			t.Fatalf("checkpoint %+v", ck)
		}
		if err := c.client.Expect(ctx, "node-b", id, agentapi.ExpectRequest{SourceNode: "node-a"}); err != nil {
			t.Fatal(err)
		}
		tr := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
			return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: id, CheckpointID: id, Mode: mode,
				Repository: c.registry + "/ckpt", TargetNode: "node-b", Container: "app"})
		})
		if tr.State != agentapi.OpSucceeded {
			t.Fatalf("%s transfer %+v", mode, tr)
		}
		key := staging.Key{Namespace: "shop", Pod: "consumer-0-" + strings.ToLower(string(mode)), Container: "app"}
		req := agentapi.StageRequest{ID: id, Image: tr.Result.Image, Namespace: key.Namespace, Pod: key.Pod, Container: key.Container,
			SourceNode: "node-a", Seal: tr.Result.Seal}
		st := poll(t, func() (agentapi.Operation[agentapi.StageResult], error) { return c.client.Stage(ctx, "node-b", req) })
		if st.State != agentapi.OpSucceeded {
			t.Fatalf("%s stage %+v", mode, st)
		}
		l := c.staging["node-b"]
		dir, meta, err := l.Claim(key, "ctr-"+strings.ToLower(string(mode)))
		if err != nil || meta.CheckpointID != req.ID {
			t.Fatalf("%s: claim %v, meta %+v", mode, err, meta)
		}
		pages, err := os.ReadFile(filepath.Join(dir, "checkpoint", "pages-1.img"))
		if err != nil || len(pages) != 256<<10 {
			t.Fatalf("%s: staged pages %d bytes, %v", mode, len(pages), err)
		}
		// Claimed, not started: not restored yet. Started by the runtime
		// handler: the manager hears it from the agent.
		ctr := "ctr-" + strings.ToLower(string(mode))
		if run, err := c.client.Restored(ctx, "node-b", id); err != nil || run.Running {
			t.Fatalf("%s: claimed only, restored %+v (%v)", mode, run, err)
		}
		if err := l.MarkRunning(ctr, time.Now()); err != nil {
			t.Fatal(err)
		}
		if run, err := c.client.Restored(ctx, "node-b", id); err != nil || !run.Running || run.ContainerID != ctr {
			t.Fatalf("%s: started, restored %+v (%v)", mode, run, err)
		}
		again := poll(t, func() (agentapi.Operation[agentapi.StageResult], error) { return c.client.Stage(ctx, "node-b", req) })
		if again.State != agentapi.OpSucceeded {
			t.Fatalf("repeated stage %+v", again)
		}
		if _, err := l.Staged(key); !errors.Is(err, staging.ErrNotStaged) {
			t.Fatalf("%s: a repeated stage request staged the consumed checkpoint again (%v)", mode, err)
		}
		if err := c.client.Cleanup(ctx, "node-b", id, ""); err != nil {
			t.Fatal(err)
		}
		if run, err := c.client.Restored(ctx, "node-b", id); err != nil || run.Running {
			t.Fatalf("%s: the migration's cleanup kept the running record: %+v (%v)", mode, run, err)
		}
	}

	// Staged and never claimed (a rolled back migration): cleanup removes it.
	poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", agentapi.CheckpointRequest{ID: "mig-11", Namespace: "shop", Pod: "consumer-0", Container: "app"})
	})
	if err := c.client.Expect(ctx, "node-b", "mig-11", agentapi.ExpectRequest{SourceNode: "node-a"}); err != nil {
		t.Fatal(err)
	}
	tr := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
		return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: "mig-11", CheckpointID: "mig-11", Mode: agentapi.TransferDirect, TargetNode: "node-b", Container: "app"})
	})
	key := staging.Key{Namespace: "shop", Pod: "consumer-0-unclaimed", Container: "app"}
	if st := poll(t, func() (agentapi.Operation[agentapi.StageResult], error) {
		return c.client.Stage(ctx, "node-b", agentapi.StageRequest{ID: "mig-11", Image: tr.Result.Image, Namespace: key.Namespace, Pod: key.Pod, Container: key.Container,
			SourceNode: "node-a", Seal: tr.Result.Seal})
	}); st.State != agentapi.OpSucceeded {
		t.Fatalf("stage %+v", st)
	}
	if _, err := c.staging["node-b"].Staged(key); err != nil {
		t.Fatalf("not staged: %v", err)
	}
	if err := c.client.Cleanup(ctx, "node-b", "mig-11", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.staging["node-b"].Staged(key); !errors.Is(err, staging.ErrNotStaged) {
		t.Fatalf("cleanup left the staged checkpoint: %v", err)
	}

	// Names that are not Kubernetes names never become paths.
	if _, err := c.client.Stage(ctx, "node-b", agentapi.StageRequest{ID: "mig-10", Image: "x", Namespace: "shop", Pod: "../../etc", Container: "app"}); err == nil ||
		!strings.Contains(err.Error(), "not a Kubernetes pod name") {
		t.Fatalf("stage with a path for a pod name: %v", err)
	}
}

// A registry without TLS gets no checkpoint unless the cluster admin named
// it, though go-containerregistry would reach a loopback one over HTTP.
func TestPlainHTTPRegistryIsRefusedUnlessNamed(t *testing.T) {
	c := newClusterWith(t, false)
	ctx := context.Background()
	req := agentapi.CheckpointRequest{ID: "mig-7", Namespace: "shop", Pod: "consumer-0", Container: "app"}
	if ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", req)
	}); ck.State != agentapi.OpSucceeded {
		t.Fatalf("checkpoint %+v", ck)
	}
	op := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
		return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: "mig-7-reg", CheckpointID: "mig-7",
			Mode: agentapi.TransferRegistry, Repository: c.registry + "/ckpt", Container: "app"})
	})
	if op.State != agentapi.OpFailed || !strings.Contains(op.Message, "plain HTTP") || !strings.Contains(op.Message, "--plain-http-registry") {
		t.Fatalf("transfer to a plain-HTTP registry: %+v", op)
	}
	ref, err := name.ParseReference(c.registry+"/ckpt:mig-7", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Index(ref); err == nil {
		t.Error("the checkpoint reached the registry")
	}
}

func TestTransferOfUnknownCheckpointIsRefused(t *testing.T) {
	c := newCluster(t)
	_, err := c.client.Transfer(context.Background(), "node-a", agentapi.TransferRequest{ID: "x", CheckpointID: "nope", Mode: agentapi.TransferDirect, TargetNode: "node-b", Container: "app"})
	if err == nil || !strings.Contains(err.Error(), `no finished checkpoint "nope"`) {
		t.Fatalf("got %v", err)
	}
}

// Only holders of a certificate from the CA get in.
func TestAgentsDemandCertificates(t *testing.T) {
	c := newCluster(t)
	ep, _ := c.client.Resolver.Endpoint(context.Background(), "node-a")
	host := strings.TrimPrefix(ep, "https://")
	trusted := identity.ManagerTLS(c.ca)
	trusted.ServerName = identity.AgentDNSName("node-a")

	noCert := &tls.Config{RootCAs: trusted.RootCAs, ServerName: trusted.ServerName, MinVersion: tls.VersionTLS13}
	if err := handshake(host, noCert); err == nil {
		t.Error("a client without a certificate was let in")
	}
	other, err := identity.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	stranger := identity.ManagerTLS(other)
	stranger.RootCAs, stranger.ServerName = trusted.RootCAs, trusted.ServerName // it trusts the agent, the agent must not trust it
	if err := handshake(host, stranger); err == nil {
		t.Error("a client with a certificate from another CA was let in")
	}
	if err := handshake(host, trusted); err != nil {
		t.Errorf("the rightful client was refused: %v", err)
	}
}

// An agent obeys the manager only: another agent's certificate (one
// stolen from a node) commands nothing, sends a checkpoint only as its own
// node, and cannot pass for another node's agent.
func TestAgentsObeyOnlyTheManager(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	resolver := c.client.Resolver.(staticResolver)
	stolen := agentclient.New(resolver, agentTLS(t, c.ca, "node-b"))

	_, err := stolen.Checkpoint(ctx, "node-a", agentapi.CheckpointRequest{ID: "loot-1", Namespace: "bank", Pod: "vault-0", Container: "app"})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "only the ms2m manager") || !strings.Contains(err.Error(), "ms2m-agent:node-b") {
		t.Errorf("node-b's agent asked node-a's for a checkpoint: %v", err)
	}
	if _, err := stolen.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: "loot-2", CheckpointID: "x", Mode: agentapi.TransferRegistry, Repository: c.registry + "/loot", Container: "app"}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("node-b's agent asked node-a's for a transfer: %v", err)
	}
	if _, err := stolen.Ready(ctx, "node-a"); err == nil {
		t.Error("node-b's agent read node-a's report")
	}

	// node-b's agent may send node-a a checkpoint as node-b, never as node-c.
	_, err = stolen.Send(ctx, "node-a", agentapi.Incoming{ID: "forged-1", Container: "app", Source: "node-c"}, strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), `names "node-c"`) {
		t.Errorf("node-b's agent sent a checkpoint as node-c: %v", err)
	}
	// As itself, only what the manager announced, from it, once.
	_, err = stolen.Send(ctx, "node-a", agentapi.Incoming{ID: "forged-3", Container: "app", Source: "node-b"}, strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "announced no transfer of checkpoint forged-3 from node node-b") {
		t.Errorf("node-b's agent sent an unannounced checkpoint: %v", err)
	}
	if err := c.client.Expect(ctx, "node-a", "forged-4", agentapi.ExpectRequest{SourceNode: "node-c"}); err != nil {
		t.Fatal(err)
	}
	_, err = stolen.Send(ctx, "node-a", agentapi.Incoming{ID: "forged-4", Container: "app", Source: "node-b"}, strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("node-b's agent sent a checkpoint announced from node-c: %v", err)
	}
	if err := stolen.Expect(ctx, "node-a", "forged-5", agentapi.ExpectRequest{SourceNode: "node-b"}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("node-b's agent announced a transfer itself: %v", err)
	}

	// Nor a Stream checkpoint's pages: unannounced, announced from another
	// node, or announced as an archive, they are refused.
	if _, err := stolen.SendPages(ctx, "node-a", "node-b", "forged-6"); err == nil || !strings.Contains(err.Error(), "403") ||
		!strings.Contains(err.Error(), "announced no pages of checkpoint forged-6 from node node-b") {
		t.Errorf("node-b's agent sent unannounced pages: %v", err)
	}
	if err := c.client.Expect(ctx, "node-a", "forged-7", agentapi.ExpectRequest{SourceNode: "node-c", Pages: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.client.Expect(ctx, "node-a", "forged-8", agentapi.ExpectRequest{SourceNode: "node-b"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"forged-7", "forged-8"} {
		if _, err := stolen.SendPages(ctx, "node-a", "node-b", id); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("node-b's agent sent the pages of %s: %v", id, err)
		}
	}
	if _, err := stolen.SendPages(ctx, "node-a", "node-c", "forged-7"); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), `names "node-c"`) {
		t.Errorf("node-b's agent sent pages as node-c: %v", err)
	}
	if err := stolen.Withdraw(ctx, "node-a", "forged-9"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("node-b's agent withdrew a checkpoint on node-a: %v", err)
	}
	if _, err := stolen.Restored(ctx, "node-a", "forged-9"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("node-b's agent asked node-a about a restored container: %v", err)
	}

	// The manager may not push archives either: only a source agent does.
	if _, err := c.client.Send(ctx, "node-a", agentapi.Incoming{ID: "forged-2", Container: "app", Source: "node-b"}, strings.NewReader("x"), 1); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("the manager pushed an archive: %v", err)
	}

	// An agent answering at node-a's address with node-b's certificate is
	// not node-a's agent.
	swapped := agentclient.New(staticResolver{"node-a": resolver["node-b"]}, identity.ManagerTLS(c.ca))
	if _, err := swapped.Ready(ctx, "node-a"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("node-b's agent passed for node-a's: %v", err)
	}
}

func handshake(host string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	// TLS 1.3 reports a refused client certificate on the first read.
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("GET /v1/ready HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 1)
	_, err = conn.Read(buf)
	return err
}

func TestReadyReportsMissingCRIUConfig(t *testing.T) {
	srv, err := agent.NewServer(agent.Config{Node: "node-x", StateDir: t.TempDir(), CRIUConfig: filepath.Join(t.TempDir(), "missing.conf")})
	if err != nil {
		t.Fatal(err)
	}
	rep := srv.Report(context.Background())
	if rep.Ready || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0], "CRIUConfigMissing") || rep.DirectReceive {
		t.Fatalf("%+v", rep)
	}
	partial := filepath.Join(t.TempDir(), "runc.conf")
	_ = os.WriteFile(partial, []byte("# tcp-close\ntcp-established\n"), 0o644)
	srv, _ = agent.NewServer(agent.Config{Node: "node-x", StateDir: t.TempDir(), CRIUConfig: partial})
	if rep := srv.Report(context.Background()); rep.Ready || !strings.Contains(strings.Join(rep.Problems, ""), "lacks tcp-close, skip-in-flight") {
		t.Fatalf("%+v", rep)
	}
}

// EndHeld names a checkpoint, never a container: it ends only a container
// that checkpoint's own dump holds frozen, and refuses anything else.
func TestEndHeldEndsOnlyWhatADumpHolds(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	if err := c.client.EndHeld(ctx, "node-a", "nope"); !errors.Is(err, agentapi.ErrNothingHeld) || !strings.Contains(err.Error(), "no checkpoint nope") {
		t.Fatalf("unknown checkpoint: %v", err)
	}
	req := agentapi.CheckpointRequest{ID: "mig-held", Namespace: "shop", Pod: "consumer-0", Container: "app"}
	ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", req)
	})
	if ck.State != agentapi.OpSucceeded || ck.Result.Held {
		t.Fatalf("checkpoint %+v", ck)
	}
	if err := c.client.EndHeld(ctx, "node-a", "mig-held"); !errors.Is(err, agentapi.ErrNothingHeld) || !strings.Contains(err.Error(), "holds no frozen container") {
		t.Fatalf("a checkpoint that holds nothing: %v", err)
	}
}

// A receive the agent's own end cut short leaves nothing once the agent is
// back: the partial archive is removed at start, and by the checkpoint's
// cleanup.
func TestPartlyReceivedArchivesAreRemoved(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "incoming"), 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "incoming", "mig-1.tar.part")
	if err := os.WriteFile(stale, []byte("pages"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := agent.NewServer(agent.Config{Node: "node-x", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the partial archive survived the agent's start: %v", err)
	}
	later := filepath.Join(dir, "incoming", "mig-2.tar.part")
	if err := os.WriteFile(later, []byte("pages"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Cleanup(context.Background(), "mig-2", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(later); !os.IsNotExist(err) {
		t.Errorf("the partial archive survived its checkpoint's cleanup: %v", err)
	}
}

// A checkpoint is staged for a restore only under the seal of its source
// node's agent, over exactly what arrives: a forged image, a seal of
// another node's agent or of another CA, or none, is refused and nothing
// is staged.
func TestStagingDemandsTheSourceAgentsSeal(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", agentapi.CheckpointRequest{ID: "mig-s", Namespace: "shop", Pod: "consumer-0", Container: "app"})
	})
	tr := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
		return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: "mig-s", CheckpointID: "mig-s", Mode: agentapi.TransferRegistry,
			Repository: c.registry + "/ckpt", Container: "app"})
	})
	if ck.State != agentapi.OpSucceeded || tr.State != agentapi.OpSucceeded || tr.Result.Seal == nil {
		t.Fatalf("checkpoint %+v, transfer %+v", ck, tr)
	}

	// A forged checkpoint image in the registry: other pages, same seal.
	forged := filepath.Join(t.TempDir(), "forged.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "checkpoint/pages-1.img", Mode: 0o600, Size: 4, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("evil"))
	_ = tw.Close()
	if err := os.WriteFile(forged, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	idx, err := ckptimage.Build(forged, ckptimage.Options{ContainerName: "app"})
	if err != nil {
		t.Fatal(err)
	}
	forgedRef, err := ckptimage.Push(ctx, idx, c.registry+"/ckpt:forged")
	if err != nil {
		t.Fatal(err)
	}

	other, err := identity.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	// Each attempt has its own checkpoint ID (node-b stages an ID once),
	// sealed over the true archive's digest.
	sealBy := func(cert *tls.Certificate) func(id string) *agentapi.Seal {
		return func(id string) *agentapi.Seal {
			s, err := identity.Seal(cert, id, tr.Result.Seal.ArchiveDigest)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	none := func(string) *agentapi.Seal { return nil }
	for i, tc := range []struct {
		name  string
		image string
		seal  func(id string) *agentapi.Seal
		says  string
	}{
		{"no seal", tr.Result.Image, none, "carries no seal"},
		{"sealed by another node's agent", tr.Result.Image, sealBy(agentCert(t, c.ca, "node-b")), `sealed by "ms2m-agent:node-b", not by the agent of its source node node-a`},
		{"sealed under another CA", tr.Result.Image, sealBy(agentCert(t, other, "node-a")), "ms2m's CA did not issue"},
		{"forged image under node-a's seal", forgedRef.String(), sealBy(agentCert(t, c.ca, "node-a")), "but node node-a's agent sealed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("mig-s-%d", i)
			key := staging.Key{Namespace: "shop", Pod: fmt.Sprintf("forged-%d", i), Container: "app"}
			req := agentapi.StageRequest{ID: id, Image: tc.image, Namespace: key.Namespace, Pod: key.Pod, Container: key.Container,
				SourceNode: "node-a", Seal: tc.seal(id)}
			st := poll(t, func() (agentapi.Operation[agentapi.StageResult], error) { return c.client.Stage(ctx, "node-b", req) })
			if st.State != agentapi.OpFailed || !strings.Contains(st.Message, agentapi.ErrUnauthenticated.Error()) || !strings.Contains(st.Message, tc.says) {
				t.Fatalf("stage: %+v; want refused saying %q", st, tc.says)
			}
			if _, err := c.staging["node-b"].Staged(key); !errors.Is(err, staging.ErrNotStaged) {
				t.Fatalf("something was staged: %v", err)
			}
		})
	}
}

// A dump that outlives its migration's cleanup (a slow kubelet, a phase
// timeout) leaves no archive: it is removed the moment it is written.
func TestCheckpointFinishedAfterItsCleanupIsRemoved(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.kubelet.gate = make(chan struct{})
	req := agentapi.CheckpointRequest{ID: "mig-late", Namespace: "shop", Pod: "late-0", Container: "app"}
	op, err := c.client.Checkpoint(ctx, "node-a", req)
	if err != nil || op.State != agentapi.OpRunning {
		t.Fatalf("checkpoint %+v, %v", op, err)
	}
	if err := c.client.Cleanup(ctx, "node-a", "mig-late", ""); err != nil {
		t.Fatal(err)
	}
	close(c.kubelet.gate)
	done := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", req)
	})
	if done.State != agentapi.OpFailed || !strings.Contains(done.Message, "cleaned up while it ran") {
		t.Fatalf("late checkpoint %+v", done)
	}
	if _, err := os.Stat(filepath.Join(c.kubelet.dir, "checkpoint-late-0_shop-app.tar")); !os.IsNotExist(err) {
		t.Errorf("the late archive is still there: %v", err)
	}
}

// With a key, the checkpoint leaves the source node encrypted: the
// registry holds no byte of the workload's memory in the clear, the target
// stages the plaintext, and a checkpoint that does not decrypt with the
// key the target was given is not staged.
func TestEncryptedCheckpointIsStagedOnlyWithItsKey(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	key := bytes.Repeat([]byte{7}, 32)
	memory := bytes.Repeat([]byte{9}, 4096) // a page of the fake kubelet's dump
	var archives []string
	transfer := func(id string, mode agentapi.TransferMode) agentapi.TransferResult {
		t.Helper()
		ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
			return c.client.Checkpoint(ctx, "node-a", agentapi.CheckpointRequest{ID: id, Namespace: "shop", Pod: "consumer-0", Container: "app"})
		})
		if ck.State != agentapi.OpSucceeded {
			t.Fatalf("checkpoint %+v", ck)
		}
		archives = append(archives, ck.Result.Archive)
		if err := c.client.Expect(ctx, "node-b", id, agentapi.ExpectRequest{SourceNode: "node-a", ForStaging: true}); err != nil {
			t.Fatal(err)
		}
		tr := poll(t, func() (agentapi.Operation[agentapi.TransferResult], error) {
			return c.client.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: id, CheckpointID: id, Mode: mode,
				Repository: c.registry + "/ckpt", TargetNode: "node-b", Container: "app", EncryptionKey: key})
		})
		if tr.State != agentapi.OpSucceeded {
			t.Fatalf("%s transfer %+v", mode, tr)
		}
		return tr.Result
	}
	stage := func(id string, res agentapi.TransferResult, key []byte) agentapi.Operation[agentapi.StageResult] {
		return poll(t, func() (agentapi.Operation[agentapi.StageResult], error) {
			return c.client.Stage(ctx, "node-b", agentapi.StageRequest{ID: id, Image: res.Image, Namespace: "shop", Pod: "consumer-0-" + id,
				Container: "app", SourceNode: "node-a", Seal: res.Seal, EncryptionKey: key})
		})
	}
	for _, mode := range []agentapi.TransferMode{agentapi.TransferRegistry, agentapi.TransferDirect} {
		id := "enc-" + strings.ToLower(string(mode))
		res := transfer(id, mode)
		if mode == agentapi.TransferRegistry {
			rc, err := ckptimage.Fetch(ctx, res.Image)
			if err != nil {
				t.Fatal(err)
			}
			layer, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || len(layer) < 256<<10 {
				t.Fatalf("the pushed layer: %d bytes, %v", len(layer), err)
			}
			if bytes.Contains(layer, memory) {
				t.Fatal("the registry holds the workload's memory in the clear")
			}
		}
		if st := stage(id, res, key); st.State != agentapi.OpSucceeded {
			t.Fatalf("%s stage %+v", mode, st)
		}
		dir, _, err := c.staging["node-b"].Claim(staging.Key{Namespace: "shop", Pod: "consumer-0-" + id, Container: "app"}, "ctr-"+id)
		if err != nil {
			t.Fatal(err)
		}
		pages, err := os.ReadFile(filepath.Join(dir, "checkpoint", "pages-1.img"))
		if err != nil || !bytes.HasPrefix(pages, memory) || len(pages) != 256<<10 {
			t.Fatalf("%s: staged pages %d bytes, %v", mode, len(pages), err)
		}
	}
	for _, a := range archives {
		if _, err := os.Stat(a + ".enc"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the encrypted copy of %s is left on the source once sent (%v)", a, err)
		}
	}

	res := transfer("enc-wrong", agentapi.TransferDirect)
	st := stage("enc-wrong", res, bytes.Repeat([]byte{8}, 32))
	if st.State != agentapi.OpFailed || !strings.Contains(st.Message, agentapi.ErrUnauthenticated.Error()) || !strings.Contains(st.Message, "nothing was staged") {
		t.Fatalf("staged with another key: %+v", st)
	}
	if _, err := c.staging["node-b"].Staged(staging.Key{Namespace: "shop", Pod: "consumer-0-enc-wrong", Container: "app"}); !errors.Is(err, staging.ErrNotStaged) {
		t.Fatalf("something was staged: %v", err)
	}
}
