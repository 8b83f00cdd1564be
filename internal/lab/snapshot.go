package lab

import (
	"context"
	"path/filepath"

	"github.com/ms2m/ms2m/internal/lab/deps"
	"github.com/ms2m/ms2m/internal/lab/host"
)

// HostSnapshot records what the lab may change on the host. The nft part
// needs the lab's nft binary, so it is only taken once the packages are
// fetched.
func HostSnapshot(ctx context.Context, c *Config) (*host.Snapshot, error) {
	o := host.SnapshotOptions{ExeDirs: []string{c.Dir, filepath.Join(c.Cache, "lab")}, ArgDirs: []string{c.Dir}}
	if _, p, err := deps.ReadManifest(c.Cache, ""); err == nil {
		o.Nft = p.Nft
	}
	return host.Take(ctx, o)
}
