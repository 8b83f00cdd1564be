//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// cut drops packets with a table of the lab's nftables (no reset: the
// peers see silence, as on a broken link) until end removes the table.
type cut struct {
	t     *testing.T
	table string
	what  string
	// rules are the table's chains, computed when the cut starts.
	rules   func(ctx context.Context) string
	mu      sync.Mutex
	started bool
	ended   bool
}

func newCut(t *testing.T, table, what string, rules func(ctx context.Context) string) *cut {
	c := &cut{t: t, table: table, what: what, rules: rules}
	t.Cleanup(c.end)
	return c
}

// newLinkCut cuts the two nodes' agents apart: the page stream's and the
// Direct transfer's only path.
func newLinkCut(t *testing.T) *cut {
	return newCut(t, "ms2m-e2e-link-cut", "link between the agents", func(ctx context.Context) string {
		a, b := agentIP(ctx, t, "node-a"), agentIP(ctx, t, "node-b")
		return forwardDrop(a, b)
	})
}

// forwardDrop is a table body dropping whatever is routed between a and b
// (addresses or prefixes), both ways.
func forwardDrop(a, b string) string {
	return fmt.Sprintf(" chain forward {\n  type filter hook forward priority -10\n  ip saddr %s ip daddr %s drop\n  ip saddr %s ip daddr %s drop\n }\n", a, b, b, a)
}

func (c *cut) start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	cmd := exec.Command(labCfg.Deps.Nft, "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("table inet %s {\n%s}\n", c.table, c.rules(ctx)))
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Errorf("cutting the %s: %v: %s", c.what, err, out)
		return
	}
	c.t.Logf("%s: %s cut", time.Now().Format("15:04:05.000"), c.what)
}

func (c *cut) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started || c.ended {
		return
	}
	c.ended = true
	if out, err := exec.Command(labCfg.Deps.Nft, "delete", "table", "inet", c.table).CombinedOutput(); err != nil {
		c.t.Errorf("restoring the %s: %v: %s", c.what, err, out)
		return
	}
	c.t.Logf("%s: %s restored", time.Now().Format("15:04:05.000"), c.what)
}

func (c *cut) happened() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started
}
