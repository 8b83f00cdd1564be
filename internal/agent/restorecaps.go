package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// CheckpointImageRestore says whether a containerd release restores a
// checkpoint image inside CreateContainer, and why. containerd 2.4.0
// removed that path; 2.2.7 and 2.3.4 keep it behind
// enable_experimental_restore_via_create, off by default (a node that
// switched it on is not told apart: ms2m's runtime handler is the path
// that works everywhere).
func CheckpointImageRestore(version string) (bool, string) {
	major, minor, patch, ok := semver(version)
	if !ok {
		return false, fmt.Sprintf("containerd %q: version not understood", version)
	}
	switch {
	case major > 2 || (major == 2 && minor >= 4):
		return false, fmt.Sprintf("containerd %s no longer restores checkpoint images in CreateContainer (removed in 2.4.0)", version)
	case major == 2 && minor == 3 && patch >= 4, major == 2 && minor == 2 && patch >= 7:
		return false, fmt.Sprintf("containerd %s ships restore in CreateContainer switched off (enable_experimental_restore_via_create)", version)
	case major < 2 && minor < 7:
		return false, fmt.Sprintf("containerd %s predates checkpoint image restore (1.7)", version)
	}
	return true, fmt.Sprintf("containerd %s restores checkpoint images in CreateContainer", version)
}

func semver(v string) (major, minor, patch int, ok bool) {
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "+")
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return 0, 0, 0, false
	}
	n := make([]int, 3)
	for i := 0; i < len(parts) && i < 3; i++ {
		x, err := strconv.Atoi(parts[i])
		if err != nil {
			return 0, 0, 0, false
		}
		n[i] = x
	}
	return n[0], n[1], n[2], true
}

// versionCache asks the runtime for its version once it answers.
type versionCache struct {
	mu      sync.Mutex
	version string
}

func (c *versionCache) get(ctx context.Context, ask func(context.Context) (string, error)) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != "" {
		return c.version, nil
	}
	v, err := ask(ctx)
	if err == nil {
		c.version = v
	}
	return v, err
}

// restoreCapabilities says how this node restores checkpoints.
func (s *Server) restoreCapabilities(ctx context.Context) agentapi.RestoreCapabilities {
	var rc agentapi.RestoreCapabilities
	if s.cfg.RuntimeVersion != nil {
		v, err := s.version.get(ctx, s.cfg.RuntimeVersion)
		if err != nil {
			rc.CheckpointImageReason = fmt.Sprintf("the container runtime's version is unknown: %v", err)
		} else {
			rc.Runtime = "containerd " + v
			rc.CheckpointImage, rc.CheckpointImageReason = CheckpointImageRestore(v)
		}
	} else {
		rc.CheckpointImageReason = "no container runtime socket configured: the runtime is unknown"
	}
	switch h := s.cfg.RuntimeHandler; {
	case h.Name == "":
		rc.RuntimeHandlerReason = "ms2m's runtime handler is not installed on this node (agent flag --runtime-handler)"
	case s.cfg.Staging == nil:
		rc.RuntimeHandlerReason = "the agent has no staging directory (--staging-dir)"
	default:
		if _, err := os.Stat(h.Binary); err != nil {
			rc.RuntimeHandlerReason = fmt.Sprintf("runtime handler %s: %v", h.Name, err)
			break
		}
		rc.RuntimeHandler = h.Name
		rc.RuntimeHandlerReason = fmt.Sprintf("runtime handler %s (%s) restores checkpoints staged in %s", h.Name, h.Binary, s.cfg.Staging.Dir)
	}
	return rc
}
