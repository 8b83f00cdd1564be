package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/ms2m/ms2m/internal/images"
)

// PushImages builds every main package images.Discover finds (or those in
// only) and pushes them to the lab's registry.
func PushImages(ctx context.Context, c *Config, repo, tag string, only []string, out io.Writer) ([]string, error) {
	if repo == "" {
		var err error
		if repo, err = RepoRoot(); err != nil {
			return nil, err
		}
	}
	apps, err := images.Discover(ctx, repo)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ms2m-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var refs []string
	for _, a := range apps {
		if len(only) > 0 && !slices.Contains(only, a.Name) {
			continue
		}
		t := time.Now()
		d, err := images.BuildAndPush(ctx, repo, a, c.Registry(), tag, work)
		if err != nil {
			return refs, err
		}
		fmt.Fprintf(out, "%-12s %s (%.1fs)\n", a.Name, d, time.Since(t).Seconds())
		refs = append(refs, d.String())
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("no image built (apps: %v, only: %v)", apps, only)
	}
	return refs, nil
}
