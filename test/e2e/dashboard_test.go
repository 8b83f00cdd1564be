//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/controller"
	"github.com/ms2m/ms2m/internal/dashboard"
	"github.com/ms2m/ms2m/internal/lab"
)

// Every query of the Grafana dashboard reads metrics the manager really
// exports: its /metrics is scraped while a migration runs and after it,
// and each metric a query names must have come out with samples.
func TestDashboardQueriesWhatTheManagerExports(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	scrape := func(ctx context.Context) {
		for name := range scrapeManager(ctx, t) {
			mu.Lock()
			seen[name] = true
			mu.Unlock()
		}
	}
	run(t, scenario{kind: "Deployment", exactly: true, strategy: v1alpha1.StrategyShadowPod,
		spec:   v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferRegistry},
		during: func(ctx context.Context, _ *v1alpha1.StatefulMigration) { scrape(ctx) }})
	scrape(context.Background())

	families := controller.MetricFamilies()
	qs, err := dashboard.Load(filepath.Join("..", "..", "charts", "ms2m", "dashboards", "ms2m.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		for _, name := range dashboard.Metrics(q.Expr) {
			if !seen[dashboard.Family(name, families)] {
				t.Errorf("panel %q reads %s, which the manager did not export during or after a migration", q.Panel, name)
			}
		}
	}
	t.Logf("%d queries checked against %d metric families scraped", len(qs), len(seen))
}

// scrapeManager reads the ms2m manager's /metrics and returns the families
// that have samples.
func scrapeManager(ctx context.Context, t *testing.T) map[string]bool {
	out := map[string]bool{}
	for _, fams := range managerFamilies(ctx, t) {
		for name, f := range fams {
			if len(f.GetMetric()) > 0 {
				out[name] = true
			}
		}
	}
	return out
}

// managerFamilies scrapes each running manager pod's /metrics.
func managerFamilies(ctx context.Context, t *testing.T) []map[string]*dto.MetricFamily {
	t.Helper()
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(lab.Namespace), client.MatchingLabels{"app.kubernetes.io/name": "ms2m-manager"}); err != nil {
		t.Error(err)
		return nil
	}
	var out []map[string]*dto.MetricFamily
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("http://%s:8080/metrics", p.Status.PodIP), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Logf("scraping %s: %v", p.Name, err)
			continue
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil {
			t.Errorf("parsing the metrics of %s: %v", p.Name, err)
			continue
		}
		out = append(out, fams)
	}
	return out
}
