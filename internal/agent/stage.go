package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/ckptcrypt"
	"github.com/ms2m/ms2m/internal/ckptimage"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/staging"
	"github.com/ms2m/ms2m/internal/throttle"
)

// RuntimeHandler is ms2m's runtime handler as installed on the node.
type RuntimeHandler struct {
	// Name is its runtime handler name (the RuntimeClass's handler).
	Name string
	// Binary is where the node setup installed it (a path the agent can
	// stat).
	Binary string
}

var errNoStaging = errors.New("this node's agent cannot stage checkpoints (no --staging-dir): restore through ms2m's runtime handler is impossible here")

func (s *Server) stage(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	var req agentapi.StageRequest
	if !readJSON(w, r, &req) {
		return
	}
	key := staging.Key{Namespace: req.Namespace, Pod: req.Pod, Container: req.Container}
	if req.ID != id || req.Image == "" {
		httpError(w, http.StatusBadRequest, "stage request needs id (matching the path) and image")
		return
	}
	if err := key.Validate(); err != nil {
		httpError(w, http.StatusBadRequest, "stage request: %v", err)
		return
	}
	if err := validOthers(req.Container, req.Others); err != nil {
		httpError(w, http.StatusBadRequest, "stage request: %v", err)
		return
	}
	if s.cfg.Staging == nil {
		httpError(w, http.StatusConflict, "%v", errNoStaging)
		return
	}
	// One staging per checkpoint, ever: a repeated request returns the
	// first one's state and never stages again, so a checkpoint its
	// container already consumed cannot be put back for a second restore.
	op := s.stages.StartOrGet(id, func(ctx context.Context, progress progressFunc) (agentapi.StageResult, error) {
		return s.doStage(ctx, req, key, progress)
	})
	writeJSON(w, http.StatusOK, s.stages.Await(r.Context(), op, waitOf(r)))
}

func (s *Server) doStage(ctx context.Context, req agentapi.StageRequest, key staging.Key, progress progressFunc) (agentapi.StageResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := identity.CheckSeal(req.Seal, s.cfg.Trust, req.ID, req.SourceNode); err != nil {
		return agentapi.StageResult{}, fmt.Errorf("%w: %v; nothing was staged", agentapi.ErrUnauthenticated, err)
	}
	raw, size, err := s.openCheckpoint(ctx, req)
	if err != nil {
		return agentapi.StageResult{}, err
	}
	defer raw.Close()
	// The seal is the plaintext's: what is hashed below is what decrypts.
	var archive io.Reader = raw
	if len(req.EncryptionKey) > 0 {
		if archive, err = ckptcrypt.Decrypt(req.EncryptionKey, req.ID, raw); err != nil {
			return agentapi.StageResult{}, fmt.Errorf("%w: %v; nothing was staged", agentapi.ErrUnauthenticated, err)
		}
	}
	l := *s.cfg.Staging
	dir, err := l.Begin(key)
	if err != nil {
		return agentapi.StageResult{}, err
	}
	h := sha256.New()
	body := &countingReader{r: io.TeeReader(archive, h), total: size, progress: progress}
	if err := staging.Unpack(ctx, body, dir); err != nil {
		_ = os.RemoveAll(dir)
		return agentapi.StageResult{}, notDecrypted(err)
	}
	// Unpack may stop at the archive's end marker: the rest counts too.
	if _, err := io.Copy(h, archive); err != nil {
		_ = os.RemoveAll(dir)
		return agentapi.StageResult{}, notDecrypted(err)
	}
	if got := identity.Digest(h); got != req.Seal.ArchiveDigest {
		_ = os.RemoveAll(dir)
		return agentapi.StageResult{}, fmt.Errorf("%w: checkpoint %s arrived as %s, but node %s's agent sealed %s (altered in transit or at rest); nothing was staged",
			agentapi.ErrUnauthenticated, req.ID, got, req.SourceNode, req.Seal.ArchiveDigest)
	}
	if req.StreamedPages {
		if err := s.stagePages(ctx, req.ID, dir); err != nil {
			_ = os.RemoveAll(dir)
			return agentapi.StageResult{}, fmt.Errorf("stream: %w; nothing was staged", err)
		}
	}
	if req.LazyPages {
		// Before the commit: a target container waiting for its
		// checkpoint (a warm ShadowPod target) claims it at once, and its
		// restore needs the daemon waiting. CRIU holds the directories it
		// was given open, so the commit's move, and the claim's, are
		// nothing to it; the restore finds its socket in work/.
		if err := s.startLazyPages(ctx, req.ID, req.SourceNode, dir); err != nil {
			_ = os.RemoveAll(dir)
			return agentapi.StageResult{}, fmt.Errorf("post-copy: %w; nothing was staged", err)
		}
	}
	if err := stageOthers(l, req, dir); err != nil {
		_ = os.RemoveAll(dir)
		return agentapi.StageResult{}, errors.Join(err, s.stopPagesIn(req.ID))
	}
	if err := l.Commit(key, dir, staging.Meta{CheckpointID: req.ID, LazyPages: req.LazyPages}); err != nil {
		_ = os.RemoveAll(dir)
		return agentapi.StageResult{}, errors.Join(err, s.stopPagesIn(req.ID), removeStagedFor(l, req.ID, req.Namespace, req.Pod, req.Others...))
	}
	s.cfg.Log.Info("staged checkpoint", "id", req.ID, "for", key.String(), "others", req.Others, "bytes", body.done, "took", time.Since(start))
	return agentapi.StageResult{Dir: l.Path(key), SizeBytes: body.done, Namespace: key.Namespace, Pod: key.Pod, Container: key.Container, Others: req.Others}, nil
}

// validOthers refuses other containers that are not container names, or
// name the requested container, or one twice: each becomes a path.
func validOthers(container string, others []string) error {
	seen := map[string]bool{container: true}
	for _, o := range others {
		if err := (staging.Key{Namespace: "x", Pod: "x", Container: o}).Validate(); err != nil {
			return fmt.Errorf("others: %w", err)
		}
		if seen[o] {
			return fmt.Errorf("others: container %s is named twice (or is the requested container)", o)
		}
		seen[o] = true
	}
	return nil
}

// stageOthers stages, each for its own container, the dumps of the pod's
// other containers that an archive of one cut holds (unpacked into dir),
// before the requested container's: a target waiting for its checkpoint
// takes that one at once, and the kubelet creates the others after it.
// An archive without one of them stages none: the cut is all or nothing.
func stageOthers(l staging.Layout, req agentapi.StageRequest, dir string) error {
	others := filepath.Join(dir, staging.OthersDir)
	defer os.RemoveAll(others)
	for _, name := range req.Others {
		if _, err := os.Stat(filepath.Join(others, name, staging.ImagesDir)); err != nil {
			return fmt.Errorf("checkpoint %s holds no dump of container %s, which the request names with %s; nothing was staged", req.ID, name, req.Container)
		}
	}
	for i, name := range req.Others {
		k := staging.Key{Namespace: req.Namespace, Pod: req.Pod, Container: name}
		if err := l.Commit(k, filepath.Join(others, name), staging.Meta{CheckpointID: req.ID}); err != nil {
			return errors.Join(fmt.Errorf("staging container %s of checkpoint %s: %w; nothing was staged", name, req.ID, err),
				removeStagedFor(l, req.ID, req.Namespace, req.Pod, req.Others[:i]...))
		}
	}
	return nil
}

// removeStagedFor removes what checkpoint id staged for the containers of
// the pod, leaving alone what a container claimed already and what a later
// checkpoint staged.
func removeStagedFor(l staging.Layout, id, namespace, pod string, containers ...string) error {
	var errs []error
	for _, c := range containers {
		k := staging.Key{Namespace: namespace, Pod: pod, Container: c}
		m, err := l.Staged(k)
		switch {
		case errors.Is(err, staging.ErrNotStaged):
		case err != nil:
			errs = append(errs, err)
		case m.CheckpointID == id:
			errs = append(errs, l.Remove(k))
		}
	}
	return errors.Join(errs...)
}

// notDecrypted names a checkpoint that failed to decrypt for what it is:
// not the source's, as a wrong seal.
func notDecrypted(err error) error {
	if errors.Is(err, ckptcrypt.ErrNotDecrypted) {
		return fmt.Errorf("%w: %v; nothing was staged", agentapi.ErrUnauthenticated, err)
	}
	return err
}

// openCheckpoint opens the checkpoint archive: the one received by a
// Direct transfer, else the checkpoint image's layer from its registry.
func (s *Server) openCheckpoint(ctx context.Context, req agentapi.StageRequest) (io.ReadCloser, int64, error) {
	if f, err := os.Open(s.incomingPath(req.ID)); err == nil {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, fi.Size(), nil
	}
	if req.Image == DirectImageRef(req.ID) {
		return nil, 0, fmt.Errorf("checkpoint %s was sent to this node, but its archive is gone", req.ID)
	}
	rc, err := ckptimage.Fetch(ctx, s.cfg.Registry.pushRef(req.Image), s.cfg.Registry.options(nil)...)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching the checkpoint image: %w", err)
	}
	return readCloser{Reader: throttle.New(req.BytesPerSecond).Reader(ctx, rc), Closer: rc}, 0, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// withdraw records that a checkpoint will never be staged here: the
// manager gave its migration up, and the warm target's container, which
// waits for it in ms2m's runtime handler, fails at once.
func (s *Server) withdraw(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	if s.cfg.Staging == nil {
		w.WriteHeader(http.StatusNoContent) // nothing here waits for a staging
		return
	}
	if err := s.cfg.Staging.Withdraw(id); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	s.cfg.Log.Info("withdrew checkpoint", "id", id)
	w.WriteHeader(http.StatusNoContent)
}

// removeStaged removes what is staged for a checkpoint (never claimed, or
// a migration rolled back before its container was created).
func (s *Server) removeStaged(id string) error {
	op, ok := s.stages.Get(id)
	if !ok || s.cfg.Staging == nil || op.Result.Pod == "" {
		return nil
	}
	return removeStagedFor(*s.cfg.Staging, id, op.Result.Namespace, op.Result.Pod, append([]string{op.Result.Container}, op.Result.Others...)...)
}

// restored tells the manager whether the container restored from a
// checkpoint staged here runs, as the runtime handler recorded it.
func (s *Server) restored(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	if s.cfg.Staging == nil {
		httpError(w, http.StatusNotImplemented, "node %s stages no checkpoints (no runtime handler), so it records no restores", s.cfg.Node)
		return
	}
	run, running, err := s.cfg.Staging.RunningFrom(id)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, agentapi.RestoredStatus{Running: running, ContainerID: run.ContainerID, Since: run.Since})
}
