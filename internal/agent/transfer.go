package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/ckptcrypt"
	"github.com/ms2m/ms2m/internal/ckptimage"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/throttle"
)

// Registry stores checkpoint images (Registry transfers).
type Registry struct {
	// Options for every registry call (auth, transport).
	Options []remote.Option
	// Aliases map a registry as the nodes' runtimes name it to the address
	// the agent reaches it at (a lab registry is 127.0.0.1 to the runtimes
	// and the host's IP to pods).
	Aliases map[string]string
	// PlainHTTP are the registries (host:port, as the agent reaches them)
	// the cluster admin lets the agent use without TLS; every other is
	// reached over HTTPS only, loopback and private addresses included.
	PlainHTTP []string
}

// options are every registry call's: Options, then the transport that
// refuses plain HTTP to registries PlainHTTP does not name, paced by
// limit (nil: not paced).
func (r Registry) options(limit *throttle.Limiter, extra ...remote.Option) []remote.Option {
	opts := append(append([]remote.Option{}, extra...), r.Options...)
	return append(opts, remote.WithTransport(limit.Transport(tlsOnly{base: remote.DefaultTransport, plain: r.PlainHTTP})))
}

// tlsOnly lets a request go over plain HTTP only to a registry named in
// plain. go-containerregistry reaches loopback and private addresses over
// HTTP by itself; a checkpoint, a pod's whole memory, must not cross a
// network in the clear unless the cluster admin chose that.
type tlsOnly struct {
	base  http.RoundTripper
	plain []string
}

func (t tlsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !slices.Contains(t.plain, req.URL.Host) {
		return nil, fmt.Errorf("registry %s would be reached over plain HTTP, which the agent does only for registries its --plain-http-registry names (a checkpoint is a pod's whole memory)", req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

// pushRef is where the agent pushes ref: the same repository, through the
// alias of its registry, if any.
func (r Registry) pushRef(ref string) string {
	for from, to := range r.Aliases {
		if rest, ok := strings.CutPrefix(ref, from+"/"); ok {
			return to + "/" + rest
		}
	}
	return ref
}

// nodeRef names, as the runtimes know it, what was pushed as pushed.
func (r Registry) nodeRef(pushed string) string {
	for from, to := range r.Aliases {
		if rest, ok := strings.CutPrefix(pushed, to+"/"); ok {
			return from + "/" + rest
		}
	}
	return pushed
}

func (s *Server) doTransfer(ctx context.Context, req agentapi.TransferRequest, ck agentapi.CheckpointResult, progress progressFunc) (agentapi.TransferResult, error) {
	// The seal's digest is a whole read of the archive: taken beside the
	// transfer, it costs no time of its own (0.6 s for 512 MiB here).
	type sealed struct {
		seal *agentapi.Seal
		err  error
	}
	sealc := make(chan sealed, 1)
	go func() {
		seal, err := s.seal(req.CheckpointID, ck.Archive)
		sealc <- sealed{seal, err}
	}()
	var res agentapi.TransferResult
	archive, err := s.encrypted(req, ck.Archive)
	if err == nil {
		switch req.Mode {
		case agentapi.TransferRegistry:
			res, err = s.pushToRegistry(ctx, req, archive, progress)
		case agentapi.TransferDirect:
			res, err = s.sendDirect(ctx, req, archive, progress)
		default:
			err = fmt.Errorf("unknown transfer mode %q", req.Mode)
		}
		if archive != ck.Archive {
			err = errors.Join(err, os.Remove(archive))
		}
	}
	sl := <-sealc
	if err == nil {
		err = sl.err
	}
	res.Seal = sl.seal
	return res, err
}

// encrypted is the archive to send: with the request's key, the archive
// encrypted (beside it, removed once sent); without, the archive itself.
func (s *Server) encrypted(req agentapi.TransferRequest, archive string) (string, error) {
	if len(req.EncryptionKey) == 0 {
		return archive, nil
	}
	enc := archive + ".enc"
	if err := ckptcrypt.EncryptFile(req.EncryptionKey, req.CheckpointID, archive, enc); err != nil {
		return "", err
	}
	return enc, nil
}

// seal signs the archive of checkpoint id as this node's agent.
func (s *Server) seal(id, archive string) (*agentapi.Seal, error) {
	if s.cfg.Identity == nil {
		return nil, fmt.Errorf("this agent has no identity to seal checkpoint %s with", id)
	}
	digest, err := identity.DigestFile(archive)
	if err != nil {
		return nil, fmt.Errorf("sealing checkpoint %s: %w", id, err)
	}
	seal, err := identity.Seal(s.cfg.Identity(), id, digest)
	if err != nil {
		return nil, fmt.Errorf("sealing checkpoint %s: %w", id, err)
	}
	return seal, nil
}

// pushToRegistry wraps the archive as a checkpoint image and pushes it to
// <repository>:<checkpoint id>; the target pulls it by digest.
func (s *Server) pushToRegistry(ctx context.Context, req agentapi.TransferRequest, archive string, progress progressFunc) (agentapi.TransferResult, error) {
	if req.Repository == "" {
		return agentapi.TransferResult{}, fmt.Errorf("Registry transfer without a repository")
	}
	idx, err := ckptimage.Build(archive, ckptimage.Options{ContainerName: req.Container, Encrypted: len(req.EncryptionKey) > 0})
	if err != nil {
		return agentapi.TransferResult{}, fmt.Errorf("building the checkpoint image: %w", err)
	}
	ref := s.cfg.Registry.pushRef(req.Repository + ":" + req.CheckpointID)
	updates := make(chan v1Update, 16)
	go forwardProgress(updates, progress)
	opts := s.cfg.Registry.options(throttle.New(req.BytesPerSecond), remote.WithContext(ctx), remote.WithProgress(updates))
	d, err := ckptimage.Push(ctx, idx, ref, opts...)
	if err != nil {
		return agentapi.TransferResult{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return agentapi.TransferResult{Image: s.cfg.Registry.nodeRef(d.String()), Digest: d.DigestStr()}, nil
}

// sendDirect streams the archive to the target node's agent, which builds
// the image there and hands it to its runtime: no registry ever holds it.
func (s *Server) sendDirect(ctx context.Context, req agentapi.TransferRequest, archive string, progress progressFunc) (agentapi.TransferResult, error) {
	if s.cfg.Peers == nil {
		return agentapi.TransferResult{}, fmt.Errorf("this agent cannot reach other agents")
	}
	f, err := os.Open(archive)
	if err != nil {
		return agentapi.TransferResult{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return agentapi.TransferResult{}, err
	}
	body := &countingReader{r: throttle.New(req.BytesPerSecond).Reader(ctx, f), total: fi.Size(), progress: progress}
	in := agentapi.Incoming{ID: req.CheckpointID, Container: req.Container, Source: s.cfg.Node}
	return s.cfg.Peers.Send(ctx, req.TargetNode, in, body, fi.Size())
}

// DirectImageRef names a Direct checkpoint image in the target's runtime.
func DirectImageRef(id string) string { return "localhost/ms2m-checkpoint:" + id }

// Receive takes a Direct checkpoint: the archive is stored, wrapped as a
// checkpoint image and imported into the node's runtime.
func (s *Server) Receive(ctx context.Context, in agentapi.Incoming, archive io.Reader) (agentapi.TransferResult, error) {
	if s.cfg.Runtime == nil && !in.ForStaging {
		return agentapi.TransferResult{}, errNoRuntime
	}
	path := s.incomingPath(in.ID)
	if err := writeFileAtomic(path, archive); err != nil {
		return agentapi.TransferResult{}, fmt.Errorf("storing the checkpoint: %w", err)
	}
	if in.ForStaging {
		// The runtime handler restores from the staged archive: an image
		// in the runtime would be a second copy of the memory, built for
		// nothing (and a checkpoint image to verify).
		return agentapi.TransferResult{Image: DirectImageRef(in.ID)}, nil
	}
	idx, err := ckptimage.Build(path, ckptimage.Options{ContainerName: in.Container})
	if err != nil {
		return agentapi.TransferResult{}, fmt.Errorf("building the checkpoint image: %w", err)
	}
	ref := DirectImageRef(in.ID)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeOCIArchive(pw, idx, ref)) }()
	if err := s.cfg.Runtime.Import(ctx, pr, ref); err != nil {
		_ = pr.CloseWithError(err)
		return agentapi.TransferResult{}, fmt.Errorf("importing %s into the runtime: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return agentapi.TransferResult{}, err
	}
	return agentapi.TransferResult{Image: ref, Digest: d.String()}, nil
}

func (s *Server) incomingPath(id string) string {
	return filepath.Join(s.cfg.StateDir, "incoming", id+".tar")
}

// Cleanup removes everything this node holds of a checkpoint: the
// archive the kubelet wrote, a received archive, the image in the runtime
// (received, or pulled from a registry as image) and in the registry, and
// the operations' records. Checkpoints hold the workload's whole memory,
// secrets included.
func (s *Server) Cleanup(ctx context.Context, id, image string) error {
	var errs, left []string
	note := func(what string, err error) {
		switch {
		case err == nil || os.IsNotExist(err):
		case errors.Is(err, ckptimage.ErrDeleteRefused):
			left = append(left, what+": "+err.Error())
		default:
			errs = append(errs, what+": "+err.Error())
		}
	}
	if op, ok := s.checkpoints.Get(id); ok {
		if op.State == agentapi.OpRunning {
			// The dump outlives the migration that asked for it: its
			// archive goes the moment it is written (see doCheckpoint).
			s.discarded.Store(id, true)
		}
		note("page server", s.stopPagesOut(id))
		// A dump kept for its pages by an agent that died serving them.
		if eng, err := s.engine(op.Result.Engine); err == nil {
			if d, ok := eng.(engine.Discarder); ok {
				note("served dump", d.Discard(id))
			}
		}
		if op.Result.Held {
			// A rolled-back migration's source, held since its dump:
			// it serves again. A completed one's is gone.
			if eng, err := s.engine(op.Result.Engine); err != nil {
				note("held container", err)
			} else {
				for _, ctr := range op.Result.HeldContainers() {
					note("held container "+ctr, eng.Release(ctx, ctr))
				}
			}
		}
		if op.Result.Archive != "" {
			note("archive", os.Remove(op.Result.Archive))
			note("encrypted archive", os.Remove(op.Result.Archive+".enc"))
		}
	}
	if op, ok := s.transfers.Get(id); ok && op.State == agentapi.OpSucceeded && strings.Contains(op.Result.Image, "@") && !strings.HasPrefix(op.Result.Image, "localhost/") {
		note("registry image", ckptimage.Delete(ctx, s.cfg.Registry.pushRef(op.Result.Image), s.cfg.Registry.options(nil)...))
	}
	note("received archive", os.Remove(s.incomingPath(id)))
	note("partly received archive", os.Remove(s.incomingPath(id)+".part"))
	note("lazy-pages daemon", s.stopPagesIn(id))
	note("streamed pages", s.stopStream(id))
	note("staged checkpoint", s.removeStaged(id))
	if s.cfg.Staging != nil {
		note("withdrawal", s.cfg.Staging.ForgetWithdrawn(id))
		note("claim record", s.cfg.Staging.ForgetClaimed(id))
		note("running record", s.cfg.Staging.ForgetRunning(id))
	}
	if s.cfg.Runtime != nil {
		note("runtime image", s.cfg.Runtime.Remove(ctx, DirectImageRef(id)))
		if image != "" && image != DirectImageRef(id) {
			note("pulled image", s.cfg.Runtime.Remove(ctx, image))
		}
	}
	if len(errs) > 0 {
		// The records stay: they are how a retry finds what is left.
		return fmt.Errorf("cleanup of %s: %s", id, strings.Join(errs, "; "))
	}
	if _, running := s.discarded.Load(id); !running {
		note("checkpoint record", s.checkpoints.Forget(id))
	}
	note("transfer record", s.transfers.Forget(id))
	note("stage record", s.stages.Forget(id))
	if len(errs) > 0 {
		return fmt.Errorf("cleanup of %s: %s", id, strings.Join(errs, "; "))
	}
	if len(left) > 0 {
		return fmt.Errorf("%w: %s", errLeftBehind, strings.Join(left, "; "))
	}
	return nil
}
