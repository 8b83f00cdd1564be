package agent

import (
	"net/http"
	"sync"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/identity"
)

// expectTTL bounds how long an announced transfer may take to begin.
const expectTTL = 30 * time.Minute

// expectations are the Direct transfers the manager announced: checkpoint
// ID to the node whose agent sends it. An agent key taken from a node can
// then push only what the manager is moving from that node, once.
type expectations struct {
	mu sync.Mutex
	m  map[string]expected
}

type expected struct {
	source     string
	forStaging bool
	until      time.Time
}

func (e *expectations) add(id string, req agentapi.ExpectRequest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]expected{}
	}
	now := time.Now()
	for k, v := range e.m {
		if now.After(v.until) {
			delete(e.m, k)
		}
	}
	e.m[id] = expected{source: req.SourceNode, forStaging: req.ForStaging, until: now.Add(expectTTL)}
}

// take consumes the expectation of id from source.
func (e *expectations) take(id, source string) (expected, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[id]
	if !ok || x.source != source || time.Now().After(x.until) {
		return expected{}, false
	}
	delete(e.m, id)
	return x, true
}

// expect records the manager's announcement of a Direct transfer.
func (s *Server) expect(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	var req agentapi.ExpectRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.SourceNode == "" {
		httpError(w, http.StatusBadRequest, "expect request needs sourceNode")
		return
	}
	if req.Pages {
		s.expectedPages.add(id, req)
	} else {
		s.expected.add(id, req)
	}
	w.WriteHeader(http.StatusNoContent)
}

// incoming receives a Direct transfer from the source node's agent. The
// body is the checkpoint archive; it is imported before the reply, so a
// success means the target's runtime has the image.
func (s *Server) incoming(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	in := agentapi.Incoming{ID: id, Container: r.Header.Get(agentapi.HeaderContainer), Source: r.Header.Get(agentapi.HeaderSource)}
	if in.Container == "" {
		httpError(w, http.StatusBadRequest, "missing %s header", agentapi.HeaderContainer)
		return
	}
	// fromAgent checked the caller is the agent of in.Source.
	x, ok := s.expected.take(id, in.Source)
	if !ok {
		httpError(w, http.StatusForbidden, "the manager announced no transfer of checkpoint %s from node %s (%s) to this node", id, in.Source, identity.Peer(r))
		return
	}
	in.ForStaging = x.forStaging
	res, err := s.Receive(r.Context(), in, r.Body)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	s.cfg.Log.Info("received checkpoint", "id", id, "from", in.Source, "image", res.Image)
	writeJSON(w, http.StatusOK, res)
}
