package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/staging"
)

// Stream, on both nodes. The source agent opens the way to the target's
// agent (the one the manager named in the checkpoint request), which the
// manager told to expect the pages from the source's node; the dumping
// CRIU's page transfer goes through it to CRIU's page server on the
// target, which writes the pages beside where the checkpoint will be
// staged. The staging adds them to the rest of the images once the
// archive comes.

// PageSenders opens the way for a Stream checkpoint's pages to the target
// node's agent.
type PageSenders interface {
	SendPages(ctx context.Context, node, from, checkpointID string) (io.ReadWriteCloser, error)
}

// PageReceiverStarter starts CRIU's page server for a Stream checkpoint
// (engine.Runc).
type PageReceiverStarter interface {
	ReceivePages(dir string, pageServer *os.File) (*engine.PageReceiver, error)
}

// pagesRecv is a Stream checkpoint's page server on the target node.
type pagesRecv struct {
	daemon *engine.PageReceiver
	dir    string // its images are in dir/images
	bytes  atomic.Int64
	stop   func()
}

func (s *Server) sendPagesTo(ctx context.Context, node, id string) (io.ReadWriteCloser, error) {
	ps, ok := s.cfg.Peers.(PageSenders)
	if !ok {
		return nil, errors.New("this agent cannot reach other agents' page servers")
	}
	sink, err := ps.SendPages(ctx, node, s.cfg.Node, id)
	if err != nil {
		return nil, fmt.Errorf("sending the pages of checkpoint %s to node %s: %w", id, node, err)
	}
	return sink, nil
}

// streamDir is where the pages of Stream checkpoint id are written: in
// the staging tree, so that the staging moves them, never copies them.
func (s *Server) streamDir(id string) string {
	return filepath.Join(s.cfg.Staging.Dir, ".incoming", "pages-"+id)
}

// incomingPages takes the page stream of a Stream checkpoint from the
// agent of the node the manager announced, once, and feeds it to a page
// server of its own.
func (s *Server) incomingPages(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	source := r.Header.Get(agentapi.HeaderSource) // fromAgent: the caller's node
	if r.Header.Get("Upgrade") != agentapi.UpgradePages {
		httpError(w, http.StatusBadRequest, "the pages of a checkpoint are sent by upgrading to %s", agentapi.UpgradePages)
		return
	}
	if _, ok := s.expectedPages.take(id, source); !ok {
		httpError(w, http.StatusForbidden, "the manager announced no pages of checkpoint %s from node %s (%s) to this node", id, source, identity.Peer(r))
		return
	}
	if _, coming := s.streams.Load(id); coming {
		httpError(w, http.StatusConflict, "the pages of checkpoint %s are coming already", id)
		return
	}
	starter, ok := s.cfg.Runc.(PageReceiverStarter)
	if !ok || s.cfg.Runc == nil || s.cfg.Staging == nil {
		httpError(w, http.StatusConflict, "node %s cannot receive the pages of a checkpoint: %s", s.cfg.Node, s.cfg.RuncReason)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		httpError(w, http.StatusHTTPVersionNotSupported, "the pages of a checkpoint are sent over HTTP/1.1")
		return
	}
	dir := s.streamDir(id)
	if err := os.RemoveAll(dir); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	criuEnd, ours, err := engine.SocketPair()
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	daemon, err := starter.ReceivePages(dir, criuEnd)
	criuEnd.Close()
	if err != nil {
		ours.Close()
		_ = os.RemoveAll(dir)
		httpError(w, http.StatusInternalServerError, "page server for checkpoint %s: %v", id, err)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		daemon.Stop()
		ours.Close()
		_ = os.RemoveAll(dir)
		return
	}
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + agentapi.UpgradePages + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err == nil {
		err = agentclient.TunePageStream(conn)
	}
	if err != nil {
		daemon.Stop()
		ours.Close()
		conn.Close()
		_ = os.RemoveAll(dir)
		return
	}
	in := &pagesRecv{daemon: daemon, dir: dir}
	in.stop = func() {
		daemon.Stop()
		ours.Close()
		conn.Close()
	}
	if _, loaded := s.streams.LoadOrStore(id, in); loaded {
		in.stop()
		_ = os.RemoveAll(dir)
		return
	}
	s.cfg.Log.Info("receiving pages", "id", id, "from", source)
	// The page server's answers go back; the pages come in.
	go func() { _, _ = io.Copy(conn, ours) }()
	go func() {
		arrived := &countingReader{r: brw.Reader, progress: func(done, _ int64) { in.bytes.Store(done) }}
		_, _ = io.Copy(ours, arrived)
		// The source's CRIU ends its transfer with a close the page
		// server answers; a stream that ends otherwise leaves it waiting,
		// and the staging finds it unfinished.
		select {
		case <-daemon.Done():
		case <-time.After(daemonEndPatience):
			ours.Close()
		}
	}()
	go func() {
		err := daemon.Wait()
		ours.Close()
		conn.Close()
		s.cfg.Log.Info("received pages", "id", id, "bytes", in.bytes.Load(), "error", err)
	}()
}

// stagePages moves the pages a Stream checkpoint sent into dir (being
// staged), once its page server has written them all.
func (s *Server) stagePages(ctx context.Context, id, dir string) error {
	v, ok := s.streams.Load(id)
	if !ok {
		return fmt.Errorf("no pages of checkpoint %s came to this node", id)
	}
	in := v.(*pagesRecv)
	select {
	case <-in.daemon.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("the page server of checkpoint %s has not finished a minute after its dump did", id)
	}
	if err := in.daemon.Wait(); err != nil {
		return fmt.Errorf("the pages of checkpoint %s did not all come: %w", id, err)
	}
	src := filepath.Join(in.dir, staging.ImagesDir)
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	moved := 0
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dir, staging.ImagesDir, e.Name())
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("the archive of checkpoint %s holds %s too: it was not dumped for a page server", id, e.Name())
		}
		if err := os.Rename(from, to); err != nil {
			return err
		}
		moved++
	}
	if moved == 0 {
		return fmt.Errorf("the page server of checkpoint %s wrote no pages", id)
	}
	s.streams.Delete(id)
	return os.RemoveAll(in.dir)
}

// stopStream ends the page server of a Stream checkpoint whose migration
// ended, and removes what it wrote.
func (s *Server) stopStream(id string) error {
	if v, ok := s.streams.LoadAndDelete(id); ok {
		v.(*pagesRecv).stop()
	}
	if s.cfg.Staging == nil {
		return nil
	}
	return os.RemoveAll(s.streamDir(id))
}
