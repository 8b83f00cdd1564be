// Package registry runs the lab's OCI registry (Debian's docker-registry,
// the CNCF distribution server) on the host IP, where containerd, the agents
// in pods and the host's tools all reach it over plain HTTP.
package registry

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// Params of the registry.
type Params struct {
	Dir    string // config and blobs
	Binary string
	Addr   string // host:port
	Log    string
}

// Prepare writes the configuration.
func Prepare(p Params) error {
	if err := os.MkdirAll(filepath.Join(p.Dir, "data"), 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version: 0.1
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
log:
  level: warn
  accesslog:
    disabled: true
`, filepath.Join(p.Dir, "data"), p.Addr)
	return os.WriteFile(filepath.Join(p.Dir, "config.yml"), []byte(cfg), 0o644)
}

// Spec is the registry's process.
func Spec(p Params) supervise.Spec {
	return supervise.Spec{Name: "registry", Path: p.Binary, Args: []string{"serve", filepath.Join(p.Dir, "config.yml")}, Log: p.Log, Dir: p.Dir, Restart: true}
}

// Healthy checks the registry's API root.
func Healthy(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("registry /v2/: %s", resp.Status)
	}
	return nil
}

// GarbageCollect frees the storage of blobs no manifest references any
// more. Deleting a manifest (as agents do with a used checkpoint) only
// unlinks it: a checkpoint's memory stays on disk until this runs. The
// distribution server wants no push while it collects; callers run it
// between migrations. Untagged manifests are kept: the lab's images are
// referenced by digest.
func GarbageCollect(ctx context.Context, p Params) (string, error) {
	out, err := exec.CommandContext(ctx, p.Binary, "garbage-collect", filepath.Join(p.Dir, "config.yml")).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("registry garbage-collect: %w: %s", err, tail(out))
	}
	return tail(out), nil
}

// tail is the last line of a command's output.
func tail(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
