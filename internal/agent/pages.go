package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
)

// Post-copy, on both nodes. The source agent holds the page server of a
// lazy dump (pagesOut) and hands it, over the agents' mutual TLS, to the
// agent of the node the manager named in the checkpoint request; that
// agent (pagesIn) feeds it to its lazy-pages daemon. CRIU's page server
// protocol has no authentication of its own: it only ever runs between the
// two agents' sockets.

// LazyPagesStarter starts lazy-pages daemons (engine.Runc).
type LazyPagesStarter interface {
	StartLazyPages(dir string, pageServer *os.File) (*engine.LazyDaemon, error)
}

// pagesOut is a lazy dump's page server on the source node.
type pagesOut struct {
	ps    *engine.PageServer
	to    string // the node whose agent may take the pages
	taken atomic.Bool
	// complete: the target asked CRIU to close, having every page.
	complete atomic.Bool
}

// pagesIn is a lazy-pages daemon on the target node.
type pagesIn struct {
	daemon *engine.LazyDaemon
	bytes  atomic.Int64
	stop   func()
	// broken: the stream from the source failed before the daemon
	// finished (a cut link, the source's agent gone).
	broken atomic.Pointer[error]
}

func (p *pagesIn) status() agentapi.PagesStatus {
	st := agentapi.PagesStatus{State: agentapi.OpRunning, Bytes: p.bytes.Load()}
	select {
	case <-p.daemon.Done():
		if err := p.daemon.Wait(); err != nil {
			st.State, st.Message = agentapi.OpFailed, err.Error()
		} else {
			st.State = agentapi.OpSucceeded
		}
	default:
		// The daemon ends on the broken stream's close; it is failed
		// already.
		if err := p.broken.Load(); err != nil {
			st.State, st.Message = agentapi.OpFailed, "the page stream from the source broke: "+(*err).Error()
		}
	}
	return st
}

type pageSessions struct {
	out, in sync.Map // checkpoint ID → *pagesOut, *pagesIn
}

// servePages hands the page server of lazy checkpoint id to the agent the
// manager named as its target, once: the connection is upgraded to
// CRIU's page server protocol.
func (s *Server) servePages(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	v, found := s.pages.out.Load(id)
	if !found {
		httpError(w, http.StatusNotFound, "node %s serves no pages of checkpoint %s", s.cfg.Node, id)
		return
	}
	out := v.(*pagesOut)
	peer := identity.Peer(r)
	if node, ok := identity.AgentNode(peer); !ok || node != out.to {
		httpError(w, http.StatusForbidden, "only the agent of node %s, where the manager restores checkpoint %s, may take its pages; the caller is %q", out.to, id, peer)
		return
	}
	if r.Header.Get("Upgrade") != agentapi.UpgradePages {
		httpError(w, http.StatusBadRequest, "the pages of a checkpoint are taken by upgrading to %s", agentapi.UpgradePages)
		return
	}
	if !out.taken.CompareAndSwap(false, true) {
		httpError(w, http.StatusConflict, "the pages of checkpoint %s were taken already", id)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		out.taken.Store(false)
		httpError(w, http.StatusHTTPVersionNotSupported, "the pages of a checkpoint are taken over HTTP/1.1")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		out.taken.Store(false)
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + agentapi.UpgradePages + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		return
	}
	// A cut link must break the stream here too: the source's page server
	// would otherwise wait on a peer that is gone until TCP gives up.
	if err := agentclient.TunePageStream(conn); err != nil {
		s.cfg.Log.Error("page stream: no dead-link detection on this side", "id", id, "error", err)
	}
	s.cfg.Log.Info("serving pages", "id", id, "to", out.to)
	go s.relayPages(id, out, conn, brw.Reader)
}

// relayPages carries page requests to CRIU and pages back. A stream that
// ends without the daemon's close request (a broken link) is not passed
// on as a finished transfer: the page server waits for the migration's
// cleanup to Abort it, and the source stays frozen, whole, until then.
func (s *Server) relayPages(id string, out *pagesOut, conn net.Conn, requests *bufio.Reader) {
	defer conn.Close()
	sent := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(conn, out.ps.Conn)
		sent <- n
	}()
	closed, _, err := out.ps.CopyRequests(requests)
	if !closed {
		s.cfg.Log.Error("page stream broke before every page was taken; the page server waits for its migration to end", "id", id, "error", err)
		return
	}
	out.complete.Store(true)
	// CRIU answers the close and waits for the other side to hang up.
	_, _ = io.Copy(io.Discard, requests)
	if hc, ok := out.ps.Conn.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	}
	err = out.ps.Wait()
	s.cfg.Log.Info("served every page", "id", id, "bytes", <-sent, "criu", err)
}

// stopPagesOut ends a page server its migration no longer needs; the
// source stays alive and frozen, for the held container's release.
func (s *Server) stopPagesOut(id string) error {
	v, ok := s.pages.out.LoadAndDelete(id)
	if !ok {
		return nil
	}
	out := v.(*pagesOut)
	select {
	case <-out.ps.Done():
		return nil
	default:
	}
	if out.complete.Load() {
		// every page is on the target; CRIU is letting go of the source
		select {
		case <-out.ps.Done():
		case <-time.After(criuEndPatience):
		}
		return nil
	}
	return out.ps.Abort()
}

// criuEndPatience bounds the wait for CRIU to let go of a source whose
// pages have all been taken.
const criuEndPatience = 10 * time.Second

// Peer agents' pages: the target side.

// PagePeers opens the page stream of a lazy checkpoint from its source
// node's agent.
type PagePeers interface {
	PageStream(ctx context.Context, node, checkpointID string) (io.ReadWriteCloser, error)
}

// startLazyPages connects the lazy-pages daemon of a staged lazy
// checkpoint to its source node's page server.
func (s *Server) startLazyPages(ctx context.Context, id, sourceNode, dir string) error {
	starter, ok := s.cfg.Runc.(LazyPagesStarter)
	if !ok || s.cfg.Runc == nil {
		return fmt.Errorf("node %s cannot restore lazily: %s", s.cfg.Node, s.cfg.RuncReason)
	}
	pp, ok := s.cfg.Peers.(PagePeers)
	if !ok {
		return errors.New("this agent cannot reach other agents' page servers")
	}
	remote, err := pp.PageStream(ctx, sourceNode, id)
	if err != nil {
		return fmt.Errorf("taking the pages of checkpoint %s from node %s: %w", id, sourceNode, err)
	}
	// A socket pair, not a loopback port: nothing else on the node can
	// reach the daemon's page server connection.
	criuEnd, ours, err := engine.SocketPair()
	if err != nil {
		remote.Close()
		return err
	}
	daemon, err := starter.StartLazyPages(dir, criuEnd)
	criuEnd.Close()
	if err != nil {
		ours.Close()
		remote.Close()
		return err
	}
	in := &pagesIn{daemon: daemon}
	in.stop = func() {
		daemon.Stop()
		ours.Close()
		remote.Close()
	}
	go func() { _, _ = io.Copy(remote, ours) }()
	arrived := &countingReader{r: remote, progress: func(done, _ int64) { in.bytes.Store(done) }}
	go func() {
		_, err := io.Copy(ours, arrived)
		// A finished transfer ends the stream too, as the daemon exits.
		select {
		case <-daemon.Done():
			return // it had every page, or was stopped
		case <-time.After(daemonEndPatience):
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		in.broken.Store(&err)
		s.cfg.Log.Error("page stream from the source broke before every page arrived", "id", id, "bytes", in.bytes.Load(), "error", err)
		// The daemon sees its page server hang up and ends.
		ours.Close()
		remote.Close()
	}()
	go func() {
		err := daemon.Wait()
		ours.Close()
		remote.Close()
		s.cfg.Log.Info("lazy pages ended", "id", id, "bytes", in.bytes.Load(), "error", err)
	}()
	s.pages.in.Store(id, in)
	return nil
}

// daemonEndPatience is how long a lazy-pages daemon may take to end after
// its page stream has: longer, and the stream broke under it.
const daemonEndPatience = 2 * time.Second

// stopPagesIn ends the lazy-pages daemon of a checkpoint whose migration
// ended (a rolled-back one never restores; a finished one ended it).
func (s *Server) stopPagesIn(id string) error {
	v, ok := s.pages.in.LoadAndDelete(id)
	if !ok {
		return nil
	}
	v.(*pagesIn).stop()
	return nil
}

// pagesStatus tells the manager how far the pages of a lazy checkpoint
// staged here have come.
func (s *Server) pagesStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	v, found := s.pages.in.Load(id)
	if !found {
		httpError(w, http.StatusNotFound, "node %s takes no pages of checkpoint %s", s.cfg.Node, id)
		return
	}
	writeJSON(w, http.StatusOK, v.(*pagesIn).status())
}
