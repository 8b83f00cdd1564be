package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/staging"
)

// Importer makes a checkpoint image available to the node's container
// runtime under ref (Direct transfers).
type Importer interface {
	Import(ctx context.Context, ociArchive io.Reader, ref string) error
	Remove(ctx context.Context, ref string) error
}

// Peers sends a checkpoint to another node's agent.
type Peers interface {
	Send(ctx context.Context, node string, in agentapi.Incoming, archive io.Reader, size int64) (agentapi.TransferResult, error)
}

// Config wires an agent.
type Config struct {
	Node     string
	StateDir string
	// Kubelet dumps through the kubelet's checkpoint API, where the
	// install enables it (nil otherwise, and KubeletReason says why).
	Kubelet       engine.Engine
	KubeletReason string
	// Runc dumps with the node's runc, where the agent can run it (nil
	// where not; RuncReason says why, either way).
	Runc       engine.Engine
	RuncReason string
	// LazyPages and DirtyTracking: whether the node can take part in
	// post-copy, and in pre-copy (probed once at start; see
	// engine.Runc.MemoryCapabilities).
	LazyPages, DirtyTracking engine.Capability
	// FreezeHook: runc's CRIU configuration runs ms2m's freeze hook, and
	// the runc engine freezes a container only once runc and CRIU have
	// started (see criuhook).
	FreezeHook engine.Capability
	// Runtime is nil where Direct transfers cannot be received.
	Runtime Importer
	Peers   Peers
	// Registry pushes and deletes checkpoint images (Registry mode).
	Registry Registry
	// CRIUConfig is the path of the node's runc CRIU configuration.
	CRIUConfig string
	// RuntimeVersion asks the node's container runtime for its version.
	RuntimeVersion func(context.Context) (string, error)
	// RuntimeHandler is ms2m's runtime handler on the node, if installed.
	RuntimeHandler RuntimeHandler
	// Staging is where checkpoints are staged for the runtime handler.
	Staging *staging.Layout
	Log     *slog.Logger
	// Identity is the agent's current certificate: it seals the
	// checkpoints this node sends.
	Identity func() *tls.Certificate
	// Trust is the CA whose agents' seals this node accepts.
	Trust *x509.CertPool
}

// Server is the agent's HTTP API (served over mutual TLS by cmd/agent).
type Server struct {
	cfg         Config
	checkpoints *opStore[agentapi.CheckpointResult]
	transfers   *opStore[agentapi.TransferResult]
	stages      *opStore[agentapi.StageResult]
	version     versionCache
	expected    expectations
	// expectedPages are the page streams of Stream checkpoints the
	// manager announced; streams the ones under way.
	expectedPages expectations
	streams       sync.Map // checkpoint ID → *pagesRecv
	// discarded are checkpoints cleaned up while their dump ran.
	discarded sync.Map
	pages     pageSessions
}

// NewServer opens the agent's state.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c, err := newOpStore[agentapi.CheckpointResult]("checkpoints", cfg.StateDir)
	if err != nil {
		return nil, err
	}
	t, err := newOpStore[agentapi.TransferResult]("transfers", cfg.StateDir)
	if err != nil {
		return nil, err
	}
	// A transfer the agent's restart cut short is sent again when asked
	// again: the checkpoint it copies is still here.
	t.retryInterrupted = true
	st, err := newOpStore[agentapi.StageResult]("stages", cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "incoming"), 0o700); err != nil {
		return nil, err
	}
	// A receive cut short by the agent's own end left a partial archive,
	// part of a workload's memory, that nothing would ask for again.
	parts, _ := filepath.Glob(filepath.Join(cfg.StateDir, "incoming", "*.part"))
	for _, p := range parts {
		if err := os.Remove(p); err != nil {
			return nil, err
		}
		cfg.Log.Info("removed a partly received checkpoint", "file", p)
	}
	if cfg.Staging != nil {
		if err := os.MkdirAll(cfg.Staging.Dir, 0o700); err != nil {
			return nil, err
		}
	}
	return &Server{cfg: cfg, checkpoints: c, transfers: t, stages: st}, nil
}

// Handler routes the API. Every request is the manager's, but for a
// Direct transfer's archive, which comes from the source node's agent.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+agentapi.PathReady, fromManager(s.ready))
	mux.Handle("PUT "+agentapi.PathCheckpoints+"{id}", fromManager(s.checkpoint))
	mux.Handle("DELETE "+agentapi.PathCheckpoints+"{id}", fromManager(s.cleanup))
	mux.Handle("DELETE "+agentapi.PathCheckpoints+"{id}"+agentapi.PathHeldSuffix, fromManager(s.endHeld))
	mux.Handle("POST "+agentapi.PathCheckpoints+"{id}"+agentapi.PathHeldSuffix+agentapi.PathThawSuffix, fromManager(s.thawHeld))
	mux.Handle("PUT "+agentapi.PathTransfers+"{id}", fromManager(s.transfer))
	mux.Handle("PUT "+agentapi.PathExpected+"{id}", fromManager(s.expect))
	mux.Handle("PUT "+agentapi.PathIncoming+"{id}", fromAgent(s.incoming))
	mux.Handle("GET "+agentapi.PathIncoming+"{id}"+agentapi.PathPagesSuffix, fromAgent(s.incomingPages))
	mux.Handle("PUT "+agentapi.PathStages+"{id}", fromManager(s.stage))
	mux.Handle("DELETE "+agentapi.PathStages+"{id}", fromManager(s.withdraw))
	mux.Handle("GET "+agentapi.PathStages+"{id}"+agentapi.PathPagesSuffix, fromManager(s.pagesStatus))
	mux.Handle("GET "+agentapi.PathStages+"{id}"+agentapi.PathRunningSuffix, fromManager(s.restored))
	// servePages checks the caller is the agent the checkpoint's pages go to.
	mux.Handle("GET "+agentapi.PathCheckpoints+"{id}"+agentapi.PathPagesSuffix, http.HandlerFunc(s.servePages))
	return mux
}

// fromManager serves only the manager: an agent's certificate, stolen from
// a node, commands no other node.
func fromManager(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if peer := identity.Peer(r); peer != identity.ManagerName {
			httpError(w, http.StatusForbidden, "only the ms2m manager (%s) may %s %s; the caller is %q", identity.ManagerName, r.Method, r.URL.Path, peer)
			return
		}
		h(w, r)
	})
}

// fromAgent serves only an agent, and only as the node its certificate
// names: the archive says which node it comes from, and that must be the
// caller's.
func fromAgent(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := identity.Peer(r)
		node, ok := identity.AgentNode(peer)
		if !ok || r.Header.Get(agentapi.HeaderSource) != node {
			httpError(w, http.StatusForbidden, "only the agent of the source node named in %s may send a checkpoint; the caller is %q and names %q",
				agentapi.HeaderSource, peer, r.Header.Get(agentapi.HeaderSource))
			return
		}
		h(w, r)
	})
}

var validID = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?$`)

func (s *Server) id(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !validID.MatchString(id) {
		httpError(w, http.StatusBadRequest, "invalid operation id %q", id)
		return "", false
	}
	return id, true
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	rep := s.Report(r.Context())
	code := http.StatusOK
	if !rep.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rep)
}

func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	var req agentapi.CheckpointRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.ID != id || req.Pod == "" || req.Namespace == "" || req.Container == "" {
		httpError(w, http.StatusBadRequest, "checkpoint request needs id (matching the path), namespace, pod and container")
		return
	}
	names := make([]string, 0, len(req.Others))
	for _, o := range req.Others {
		if o.ContainerID == "" {
			httpError(w, http.StatusBadRequest, "checkpoint request: others: container %s has no containerID", o.Name)
			return
		}
		names = append(names, o.Name)
	}
	if err := validOthers(req.Container, names); err != nil {
		httpError(w, http.StatusBadRequest, "checkpoint request: %v", err)
		return
	}
	op := s.checkpoints.StartOrGet(id, func(ctx context.Context, _ progressFunc) (agentapi.CheckpointResult, error) {
		return s.doCheckpoint(ctx, req)
	})
	writeJSON(w, http.StatusOK, s.checkpoints.Await(r.Context(), op, waitOf(r)))
}

func (s *Server) doCheckpoint(ctx context.Context, req agentapi.CheckpointRequest) (agentapi.CheckpointResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	eng, err := s.engine(req.Engine)
	if err != nil {
		return agentapi.CheckpointResult{}, err
	}
	c := engine.Container{Namespace: req.Namespace, Pod: req.Pod, PodUID: req.PodUID, Name: req.Container, ID: req.ContainerID}
	start := time.Now()
	opts := engine.Options{ID: req.ID, Hold: req.Hold, LazyPages: req.PagesTo != "", PagesFromDump: req.PagesFromDump}
	var otherIDs []string
	for _, o := range req.Others {
		opts.Others = append(opts.Others, engine.Container{Namespace: req.Namespace, Pod: req.Pod, PodUID: req.PodUID, Name: o.Name, ID: o.ContainerID})
		otherIDs = append(otherIDs, o.ContainerID)
	}
	if req.StreamTo != "" {
		sink, err := s.sendPagesTo(ctx, req.StreamTo, req.ID)
		if err != nil {
			return agentapi.CheckpointResult{}, err
		}
		defer sink.Close()
		opts.PageSink = sink
	}
	res, err := eng.Checkpoint(ctx, c, opts)
	if err != nil {
		return agentapi.CheckpointResult{}, err
	}
	if _, gone := s.discarded.Load(req.ID); gone {
		// Its migration ended meanwhile and cleaned up: nothing may keep
		// the workload's memory, and a held source serves again.
		rerr := os.Remove(res.Archive)
		if res.Pages != nil {
			rerr = errors.Join(rerr, res.Pages.Abort())
		}
		held := agentapi.CheckpointResult{Held: res.Held, ContainerID: req.ContainerID, OtherContainerIDs: otherIDs}
		for _, id := range held.HeldContainers() {
			rerr = errors.Join(rerr, eng.Release(ctx, id))
		}
		s.cfg.Log.Info("removed a checkpoint finished after its cleanup", "id", req.ID, "archive", res.Archive, "error", rerr)
		return agentapi.CheckpointResult{}, fmt.Errorf("checkpoint %s was cleaned up while it ran: its archive is removed (%v)", req.ID, rerr)
	}
	fi, err := os.Stat(res.Archive)
	if err != nil {
		return agentapi.CheckpointResult{}, fmt.Errorf("checkpoint archive: %w", err)
	}
	if res.Pages != nil {
		s.pages.out.Store(req.ID, &pagesOut{ps: res.Pages, to: req.PagesTo})
	}
	s.cfg.Log.Info("checkpointed", "engine", eng.Name(), "pod", req.Namespace+"/"+req.Pod, "container", req.Container, "others", len(otherIDs), "archive", res.Archive,
		"bytes", fi.Size(), "freeze", res.Freeze, "freezeSteps", res.Steps.String(), "criu", criuStats(res.CRIU), "held", res.Held, "took", time.Since(start))
	return agentapi.CheckpointResult{Archive: res.Archive, SizeBytes: fi.Size(), CreatedAt: time.Now(), Freeze: res.Freeze, FreezeSteps: res.Steps.String(),
		Engine: eng.Name(), Held: res.Held, ContainerID: req.ContainerID, OtherContainerIDs: otherIDs, LazyPages: res.Pages != nil, StreamedBytes: res.Streamed}, nil
}

func criuStats(s *engine.DumpStats) string {
	if s == nil {
		return "not seen"
	}
	return s.String()
}

// engine is the engine a request names; the kubelet's when it names none.
func (s *Server) engine(name agentapi.CheckpointEngine) (engine.Engine, error) {
	switch name {
	case "", agentapi.EngineKubelet:
		if s.cfg.Kubelet == nil {
			return nil, fmt.Errorf("node %s's agent does not use the kubelet's checkpoint API: %s", s.cfg.Node, s.cfg.KubeletReason)
		}
		return s.cfg.Kubelet, nil
	case agentapi.EngineRunc:
		if s.cfg.Runc == nil {
			return nil, fmt.Errorf("node %s cannot dump with runc: %s", s.cfg.Node, s.cfg.RuncReason)
		}
		return s.cfg.Runc, nil
	}
	return nil, fmt.Errorf("unknown checkpoint engine %q", name)
}

func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	var req agentapi.TransferRequest
	if !readJSON(w, r, &req) {
		return
	}
	ck, found := s.checkpoints.Get(req.CheckpointID)
	if !found || ck.State != agentapi.OpSucceeded {
		httpError(w, http.StatusConflict, "no finished checkpoint %q on node %s", req.CheckpointID, s.cfg.Node)
		return
	}
	op := s.transfers.StartOrGet(id, func(ctx context.Context, progress progressFunc) (agentapi.TransferResult, error) {
		return s.doTransfer(ctx, req, ck.Result, progress)
	})
	writeJSON(w, http.StatusOK, s.transfers.Await(r.Context(), op, waitOf(r)))
}

func (s *Server) cleanup(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	if err := s.Cleanup(r.Context(), id, r.URL.Query().Get(agentapi.QueryImage)); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, errLeftBehind) {
			code = http.StatusConflict
		}
		httpError(w, code, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// endHeld kills the container a checkpoint of this agent's holds frozen.
// Only that one: the request names a checkpoint, never a container, so it
// cannot reach a container this agent did not freeze itself.
func (s *Server) endHeld(w http.ResponseWriter, r *http.Request) {
	s.onHeld(w, r, "ending", engine.Engine.Kill)
}

// thawHeld lets the container a checkpoint of this agent's holds frozen
// run again; like endHeld, it reaches no other container.
func (s *Server) thawHeld(w http.ResponseWriter, r *http.Request) {
	s.onHeld(w, r, "thawing", engine.Engine.Release)
}

func (s *Server) onHeld(w http.ResponseWriter, r *http.Request, doing string, act func(engine.Engine, context.Context, string) error) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	op, found := s.checkpoints.Get(id)
	switch {
	case !found:
		httpError(w, http.StatusNotFound, "no checkpoint %s on %s", id, s.cfg.Node)
		return
	case !op.Result.Held || op.Result.ContainerID == "":
		httpError(w, http.StatusConflict, "checkpoint %s on %s holds no frozen container", id, s.cfg.Node)
		return
	}
	eng, err := s.engine(op.Result.Engine)
	if err != nil {
		httpError(w, http.StatusConflict, "%v", err)
		return
	}
	// A lazy dump's CRIU holds the container (traced) while it serves its
	// pages: it lets go first, or a kill could not finish.
	if err := s.stopPagesOut(id); err != nil {
		httpError(w, http.StatusInternalServerError, "stopping the page server of checkpoint %s: %v", id, err)
		return
	}
	for _, ctr := range op.Result.HeldContainers() {
		if err := act(eng, r.Context(), ctr); err != nil {
			httpError(w, http.StatusInternalServerError, "%s container %s held by checkpoint %s: %v", doing, ctr, id, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// waitOf is how long the caller lets its answer be held (HeaderWait).
func waitOf(r *http.Request) time.Duration {
	ms, err := strconv.Atoi(r.Header.Get(agentapi.HeaderWait))
	if err != nil || ms <= 0 {
		return 0
	}
	return min(time.Duration(ms)*time.Millisecond, agentapi.MaxWait)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpError(w, http.StatusBadRequest, "request body: %v", err)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, agentapi.ErrorBody{Error: fmt.Sprintf(format, args...)})
}

// errLeftBehind: Cleanup did all it can; the rest cannot be removed.
var errLeftBehind = errors.New("left behind")

var errNoRuntime = errors.New("this node's agent cannot hand images to the container runtime (no containerd socket configured): Direct transfers to it are impossible; use transferMode Registry")
