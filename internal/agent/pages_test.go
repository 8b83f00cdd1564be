package agent_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/agent"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/engine"
)

// lazyEngine plays the runc engine's lazy dump: its page server is a
// process (standing in for CRIU) and one end of a pipe, whose other end
// the test reads and writes as CRIU would.
type lazyEngine struct {
	dir  string
	criu net.Conn // CRIU's end
	proc *exec.Cmd
}

func (e *lazyEngine) Name() agentapi.CheckpointEngine       { return agentapi.EngineRunc }
func (e *lazyEngine) Release(context.Context, string) error { return nil }
func (e *lazyEngine) Kill(context.Context, string) error    { return nil }
func (e *lazyEngine) Checkpoint(_ context.Context, c engine.Container, o engine.Options) (engine.Result, error) {
	archive := filepath.Join(e.dir, o.ID+".tar")
	if err := os.WriteFile(archive, []byte("images without pages"), 0o600); err != nil {
		return engine.Result{}, err
	}
	if !o.LazyPages {
		return engine.Result{Archive: archive}, nil
	}
	e.proc = exec.Command("sleep", "60")
	e.proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.proc.Start(); err != nil {
		return engine.Result{}, err
	}
	agentEnd, criuEnd := net.Pipe()
	e.criu = criuEnd
	ps := engine.NewPageServer(e.proc, "page server", func() string { return "" }, nil)
	ps.Conn = agentEnd
	return engine.Result{Archive: archive, Held: true, Pages: ps}, nil
}

// The pages of a lazy checkpoint (a workload's whole memory) go only to
// the agent of the node the manager named, over the agents' mutual TLS,
// once; requests reach CRIU whole, and a stream cut short is not passed on
// as the end of a transfer: the page server waits for the checkpoint's
// cleanup, which makes CRIU give up (the source stays alive to thaw).
func TestPagesGoOnlyToTheNamedTargetOnce(t *testing.T) {
	lazy := &lazyEngine{dir: t.TempDir()}
	c := newClusterWith(t, true, func(node string, cfg *agent.Config) {
		if node == "node-a" {
			cfg.Runc = lazy
		}
	})
	t.Cleanup(func() {
		if lazy.proc != nil {
			_ = lazy.proc.Process.Kill()
		}
	})
	ctx := context.Background()
	req := agentapi.CheckpointRequest{ID: "lazy-1", Namespace: "shop", Pod: "consumer-0", Container: "app", ContainerID: "c1",
		Engine: agentapi.EngineRunc, Hold: true, PagesTo: "node-b"}
	ck := poll(t, func() (agentapi.Operation[agentapi.CheckpointResult], error) {
		return c.client.Checkpoint(ctx, "node-a", req)
	})
	if ck.State != agentapi.OpSucceeded || !ck.Result.LazyPages || !ck.Result.Held {
		t.Fatalf("lazy checkpoint %+v", ck)
	}
	resolver := c.client.Resolver
	as := func(node string) *agentclient.Client { return agentclient.New(resolver, agentTLS(t, c.ca, node)) }

	// another node's agent, and the manager itself, are refused
	if _, err := as("node-c").PageStream(ctx, "node-a", "lazy-1"); err == nil || !strings.Contains(err.Error(), "only the agent of node node-b") {
		t.Fatalf("node-c's agent took the pages: %v", err)
	}
	if _, err := c.client.PageStream(ctx, "node-a", "lazy-1"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("the manager took the pages: %v", err)
	}
	if _, err := as("node-b").PageStream(ctx, "node-a", "no-such"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("pages of an unknown checkpoint: %v", err)
	}

	stream, err := as("node-b").PageStream(ctx, "node-a", "lazy-1")
	if err != nil {
		t.Fatal(err)
	}
	get := make([]byte, engine.RequestSize)
	binary.LittleEndian.PutUint32(get, 7) // PS_IOV_GET
	get[8] = 0xab
	if _, err := stream.Write(get); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, engine.RequestSize)
	_ = lazy.criu.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(lazy.criu, got); err != nil || !bytes.Equal(got, get) {
		t.Fatalf("CRIU got %x (%v), want the request %x", got, err, get)
	}
	if _, err := lazy.criu.Write([]byte("page")); err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 4)
	if _, err := io.ReadFull(stream, page); err != nil || string(page) != "page" {
		t.Fatalf("target read %q (%v)", page, err)
	}
	if _, err := as("node-b").PageStream(ctx, "node-a", "lazy-1"); err == nil || !strings.Contains(err.Error(), "taken already") {
		t.Fatalf("the pages were handed out twice: %v", err)
	}

	// The link breaks mid-transfer: CRIU sees no end.
	_ = stream.Close()
	_ = lazy.criu.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := lazy.criu.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Fatalf("CRIU saw %d bytes, %v after the cut; want nothing", n, err)
	}
	// The cleanup makes CRIU give up with a request it refuses.
	ended := make(chan []byte, 1)
	go func() {
		b := make([]byte, engine.RequestSize)
		_ = lazy.criu.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadFull(lazy.criu, b)
		_ = lazy.proc.Process.Kill() // CRIU ends on it
		ended <- b
	}()
	if err := c.client.Cleanup(ctx, "node-a", "lazy-1", ""); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	b := <-ended
	if cmd := binary.LittleEndian.Uint32(b) & 0xffff; cmd == 7 || cmd == 0x1023 || cmd == 0x1024 || cmd == 0 {
		t.Fatalf("cleanup sent CRIU command %#x, want one it refuses", cmd)
	}
}
