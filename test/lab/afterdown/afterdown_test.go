//go:build lab

// Package afterdown checks, after `ms2m lab down`, that the lab left nothing
// on the host: no process, mount, cgroup, network namespace, veth, route or
// nft table of its own, sysctls and files as they were before `up`.
package afterdown

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/internal/lab"
	"github.com/ms2m/ms2m/internal/lab/host"
)

func TestDownLeftNothing(t *testing.T) {
	path := os.Getenv("MS2M_LAB_SNAPSHOT")
	if path == "" {
		t.Fatal("MS2M_LAB_SNAPSHOT (the snapshot taken before `up`) is not set: run `make test-lab`")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var before host.Snapshot
	if err := json.Unmarshal(b, &before); err != nil {
		t.Fatal(err)
	}
	c, err := lab.Default()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("state directory %s is still there (%v)", c.Dir, err)
	}
	after, err := lab.HostSnapshot(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if before.Nft == nil {
		// The snapshot before a first `up` had no nft binary yet: then no
		// table of CRIU's network lock may be left.
		for _, tb := range after.Nft {
			if strings.Contains(tb, "CRIU") {
				t.Errorf("nft table left: %s", tb)
			}
		}
		after.Nft = nil
	}
	for _, d := range host.Diff(&before, after) {
		t.Error(d)
	}
	for _, n := range c.Nodes {
		for _, h := range []string{"cpu", "memory", "pids", "unified", ""} {
			if _, err := os.Stat("/sys/fs/cgroup/" + h + n.CgroupRoot); err == nil {
				t.Errorf("cgroup %s left in %q", n.CgroupRoot, h)
			}
		}
	}
	links, err := host.Links(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Kind == "veth" && !slices.Contains(before.Links, l.Name+" veth") {
			t.Errorf("veth %s left", l.Name)
		}
	}
}
