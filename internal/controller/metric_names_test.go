package controller

import (
	"path/filepath"
	"testing"

	"github.com/ms2m/ms2m/internal/dashboard"
)

// Every query of the Grafana dashboard reads only metrics the manager
// describes (the lab's TestDashboardQueriesWhatTheManagerExports checks
// that they really come out of a migration).
func TestDashboardReadsOnlyTheManagersMetrics(t *testing.T) {
	families := MetricFamilies()
	if len(families) < 15 || !families["ms2m_freeze_seconds"] || families["ms2m_migrations"] {
		t.Fatalf("metric families: %v", families)
	}
	qs, err := dashboard.Load(filepath.Join("..", "..", "charts", "ms2m", "dashboards", "ms2m.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		names := dashboard.Metrics(q.Expr)
		if len(names) == 0 {
			t.Errorf("panel %q reads no ms2m metric: %s", q.Panel, q.Expr)
		}
		for _, n := range names {
			if _, ok := families[dashboard.Family(n, families)]; !ok {
				t.Errorf("panel %q reads %s, which the manager does not export", q.Panel, n)
			}
		}
	}
}
