// Package dashboard reads ms2m's Grafana dashboard
// (charts/ms2m/dashboards/ms2m.json) and names the metrics its queries use,
// so that tests can hold it to what the manager exports.
package dashboard

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Query is one panel target's PromQL.
type Query struct {
	Panel, Expr string
}

// Load reads the dashboard's queries, failing on a panel without any.
func Load(path string) ([]Query, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if d.Title == "" || len(d.Panels) == 0 {
		return nil, fmt.Errorf("%s: no title or no panels", path)
	}
	var qs []Query
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			return nil, fmt.Errorf("%s: panel %q has no query", path, p.Title)
		}
		for _, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" {
				return nil, fmt.Errorf("%s: panel %q has an empty query", path, p.Title)
			}
			qs = append(qs, Query{Panel: p.Title, Expr: t.Expr})
		}
	}
	return qs, nil
}

// ms2m's metrics are the only ones the dashboard reads.
var metricName = regexp.MustCompile(`\bms2m_[a-z0-9_]+\b`)

// Metrics names the ms2m metrics expr reads, as exposed (a histogram's
// _bucket, _sum and _count series included).
func Metrics(expr string) []string {
	seen := map[string]bool{}
	for _, m := range metricName.FindAllString(expr, -1) {
		seen[m] = true
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Family is the metric family an exposed series name belongs to: a
// histogram's series carry a suffix.
func Family(series string, histograms map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(series, suffix); ok && histograms[f] {
			return f
		}
	}
	return series
}
