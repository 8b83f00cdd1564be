package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The page server of a lazy dump listens on every address of its network
// namespace and serves the first caller: only the agent, entering that
// namespace, may reach it, and nothing on the node's own network can.
func TestPageServerNamespaceIsReachableOnlyFromInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3 for a listener")
	}
	port := 27000 + os.Getpid()%1000
	// listens on every address, like CRIU's lazy page server
	srv := exec.Command(py, "-c", fmt.Sprintf(`
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); c.sendall(b"pages"); c.close()`, port))
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := StartInNewNetns(srv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	ready := make([]byte, 6)
	if _, err := io.ReadFull(out, ready); err != nil {
		t.Fatalf("listener did not start: %v", err)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s answered from the node's own network namespace", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialInNetns(ctx, fmt.Sprintf("/proc/%d/ns/net", srv.Process.Pid), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "pages" {
		t.Fatalf("read %q, %v", got, err)
	}
	// the caller's threads are back where they were
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s answered from the node's network namespace after DialInNetns", addr)
	}
}
