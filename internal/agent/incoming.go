package agent

import (
	"net/http"

	"github.com/ms2m/ms2m/internal/agentapi"
)

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
	res, err := s.Receive(r.Context(), in, r.Body)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	s.cfg.Log.Info("received checkpoint", "id", id, "from", in.Source, "image", res.Image)
	writeJSON(w, http.StatusOK, res)
}
