package agent_test

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/agent"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
)

// BenchmarkDirectTransfer is a Direct transfer end to end between two
// agents over mutual TLS on loopback: the source streams the archive, the
// target stores it, wraps it as a checkpoint image and hands it to its
// runtime (here one that reads the OCI archive to the end). The network
// costs nothing on loopback, so this is the agents' own ceiling: TLS,
// disk, image build and compression.
func BenchmarkDirectTransfer(b *testing.B) {
	for _, size := range []int64{1 << 20, 16 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			cl := benchAgents(b, size)
			ctx := context.Background()
			ck := waitOp(b, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
				return cl.Checkpoint(ctx, "node-a", agentapi.CheckpointRequest{ID: "bench", Namespace: "bench", Pod: "consumer-0", Container: "app"})
			})
			b.SetBytes(ck.Result.SizeBytes)
			i := 0
			for b.Loop() {
				i++
				if err := cl.Expect(ctx, "node-b", "bench", agentapi.ExpectRequest{SourceNode: "node-a"}); err != nil {
					b.Fatal(err)
				}
				op := waitOp(b, func() (agentapi.Operation[agentapi.TransferResult], error) {
					return cl.Transfer(ctx, "node-a", agentapi.TransferRequest{ID: fmt.Sprintf("bench-%d", i), CheckpointID: "bench",
						Mode: agentapi.TransferDirect, TargetNode: "node-b", Container: "app"})
				})
				if op.State != agentapi.OpSucceeded || op.Progress.BytesDone != ck.Result.SizeBytes {
					b.Fatalf("transfer %+v", op)
				}
			}
		})
	}
}

// waitOp polls an agent operation every millisecond: coarser polling
// would show up in the small sizes' throughput.
func waitOp[R any](b *testing.B, call func() (agentapi.Operation[R], error)) agentapi.Operation[R] {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		op, err := call()
		if err != nil {
			b.Fatal(err)
		}
		if op.State != agentapi.OpRunning {
			return op
		}
		if time.Now().After(deadline) {
			b.Fatalf("operation %s still running after a minute", op.ID)
		}
		time.Sleep(time.Millisecond)
	}
}

// benchAgents starts node-a and node-b's agents; node-a's kubelet
// checkpoints a consumer into an archive of about size bytes of random
// (incompressible) pages.
func benchAgents(b *testing.B, size int64) *agentclient.Client {
	b.Helper()
	ca, err := identity.NewCA()
	if err != nil {
		b.Fatal(err)
	}
	resolver := benchResolver{}
	criu := filepath.Join(b.TempDir(), "runc.conf")
	_ = os.WriteFile(criu, []byte("tcp-close\nskip-in-flight\n"), 0o644)
	for _, node := range []string{"node-a", "node-b"} {
		cert, err := ca.AgentCertificate(node, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		tlsCfg := identity.PeerTLS(ca.Pool(), func() (*tls.Certificate, error) { return cert, nil })
		srv, err := agent.NewServer(agent.Config{Node: node, StateDir: b.TempDir(), Kubelet: sizedKubelet{dir: b.TempDir(), size: size},
			Runtime: drainingRuntime{}, Peers: agentclient.New(resolver, tlsCfg), CRIUConfig: criu, Log: slog.New(slog.DiscardHandler),
			Identity: func() *tls.Certificate { return cert }, Trust: ca.Pool()})
		if err != nil {
			b.Fatal(err)
		}
		hs := httptest.NewUnstartedServer(srv.Handler())
		hs.TLS = tlsCfg.Clone()
		hs.StartTLS()
		b.Cleanup(hs.Close)
		resolver[node] = hs.URL
	}
	return agentclient.New(resolver, identity.ManagerTLS(ca))
}

type benchResolver map[string]string

func (r benchResolver) Endpoint(_ context.Context, node string) (string, error) {
	if u, ok := r[node]; ok {
		return u, nil
	}
	return "", agentapi.ErrNoAgent
}

type sizedKubelet struct {
	dir  string
	size int64
}

func (k sizedKubelet) Name() agentapi.CheckpointEngine { return agentapi.EngineKubelet }

func (k sizedKubelet) Release(context.Context, string) error { return nil }
func (k sizedKubelet) Kill(context.Context, string) error    { return nil }

func (k sizedKubelet) Checkpoint(ctx context.Context, c engine.Container, _ engine.Options) (engine.Result, error) {
	p, err := k.write(ctx, c.Namespace, c.Pod, c.Name)
	return engine.Result{Archive: p}, err
}

func (k sizedKubelet) write(_ context.Context, ns, pod, ctr string) (string, error) {
	p := filepath.Join(k.dir, "checkpoint-"+pod+"_"+ns+"-"+ctr+".tar")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	pages := make([]byte, k.size)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(pages)
	for _, e := range []struct {
		name string
		body []byte
	}{
		{"config.dump", []byte(`{"rootfsImageName":"registry.test/consumer:1"}`)},
		{"checkpoint/pages-1.img", pages},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.body)), Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.body); err != nil {
			return "", err
		}
	}
	return p, tw.Close()
}

// drainingRuntime takes an image the way a runtime's import must: reading
// all of it.
type drainingRuntime struct{}

func (drainingRuntime) Import(_ context.Context, oci io.Reader, _ string) error {
	_, err := io.Copy(io.Discard, oci)
	return err
}

func (drainingRuntime) Remove(context.Context, string) error { return nil }
