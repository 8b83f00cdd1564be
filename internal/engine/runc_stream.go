package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ms2m/ms2m/internal/staging"
)

// Stream: the source's CRIU sends its memory pages, as it dumps them, to
// CRIU's page server on the target node, and writes only the rest of its
// images locally. Neither end opens a port another process could reach:
// the dumping runc runs in a network namespace of its own, holding only a
// loopback, where the agent listens for CRIU's one connection before runc
// starts; the page server on the target reads a socket pair. The agents
// carry the stream between them over their mutual TLS.

// criuDumpStreaming runs runc checkpoint with its pages going through sink,
// and returns how many bytes went.
func (r Runc) criuDumpStreaming(ctx context.Context, c Container, ns []string, images, work string, sink io.ReadWriteCloser) (int64, error) {
	addr := "127.0.0.1:" + strconv.Itoa(pageServerPort)
	argv := append(append([]string{}, ns...), r.Runc, "--root", r.Root, "checkpoint", "--leave-running",
		"--page-server", addr, "--image-path", images, "--work-path", work, c.ID)
	cmd := r.hostCommand(ctx, argv...)
	setpgid(cmd)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	l, err := listenAndStartInNewNetns(cmd, addr)
	if err != nil {
		return 0, fmt.Errorf("runc checkpoint --page-server of %s: %w", c, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	failed := func(err error) error {
		return fmt.Errorf("runc checkpoint of %s: %w: %s%s", c, err, lastLines(stderr.String(), criuLogLines), logTail(r.local(filepath.Join(work, "dump.log"))))
	}
	var criu net.Conn
	select {
	case conn, ok := <-accepted:
		l.Close()
		if !ok {
			// CRIU finds no page server to connect to, and fails.
			return 0, failed(errors.Join(errors.New("its page server connection could not be taken"), <-exited))
		}
		criu = conn
	case err := <-exited:
		l.Close()
		if err == nil {
			err = errors.New("it ended without sending a page")
		}
		return 0, failed(err)
	}
	defer criu.Close()
	sent := make(chan int64, 1)
	go func() {
		n, err := io.Copy(sink, criu)
		if err != nil {
			// The way to the page server broke (its node, the link, the
			// page server itself): CRIU must see it, or it blocks on a
			// full socket, the container frozen, until the migration
			// times out.
			criu.Close()
		}
		sent <- n
	}()
	// The page server's answers (to the close, with which CRIU ends its
	// transfer) come back the same way. Its end of the stream ends CRIU's
	// input only: CRIU may not have read the last answer yet.
	go func() {
		_, err := io.Copy(criu, sink)
		if tc, ok := criu.(*net.TCPConn); ok && err == nil {
			_ = tc.CloseWrite()
			return
		}
		criu.Close()
	}()
	if err := <-exited; err != nil {
		// A stream that broke fails the dump: CRIU gives the container
		// back as it found it.
		_ = sink.Close()
		criu.Close()
		<-sent
		return 0, failed(err)
	}
	criu.Close()
	select {
	case n := <-sent:
		return n, nil
	case <-time.After(5 * time.Second):
		_ = sink.Close()
		return <-sent, nil
	}
}

// PageReceiver is CRIU's page server on the target node of a Stream
// migration: it writes the pages the source's CRIU sends into an images
// directory, and ends once the source's dump is done.
type PageReceiver = Daemon

// ReceivePages starts CRIU's page server writing into localDir/images (the
// agent's path of it) the pages that come through pageServer, and returns
// once it waits for them.
func (r Runc) ReceivePages(localDir string, pageServer *os.File) (*PageReceiver, error) {
	dir, err := r.hostPathOf(localDir)
	if err != nil {
		return nil, err
	}
	images, work := filepath.Join(dir, staging.ImagesDir), filepath.Join(dir, "work")
	for _, d := range []string{images, work} {
		if err := os.MkdirAll(r.local(d), 0o700); err != nil {
			return nil, err
		}
	}
	return r.startDaemon(pageServer, "page-server", "--images-dir", images, "--work-dir", work)
}
