package bench

import (
	"math"
	"slices"
	"testing"
)

// row is a completed run of a mode of testConfig with the given total and
// downtime.
func row(t *testing.T, c *Config, mode string, rate int, state string, rep int, total, downtime float64) Row {
	t.Helper()
	m, ok := c.Mode(mode)
	if !ok {
		t.Fatalf("no mode %s", mode)
	}
	r := completed(Run{Mode: m, Rate: rate, State: state, Rep: rep})
	r.Values = map[string]float64{ColTotal: total, ColDowntime: downtime, ColLost: 0, ColDuplicated: 0}
	return r
}

func TestTableRatiosWithinTheCell(t *testing.T) {
	c := testConfig(t)
	rows := []Row{
		row(t, c, "cold", 10, "1Mi", 1, 50000, 30000), row(t, c, "ms2m", 10, "1Mi", 1, 5000, 0),
		row(t, c, "cold", 10, "1Mi", 2, 52000, 32000), row(t, c, "ms2m", 10, "1Mi", 2, 6000, 0),
		row(t, c, "cold", 10, "1Mi", 3, 51000, 31000), row(t, c, "ms2m", 10, "1Mi", 3, 5500, 0),
		// another cell: must not leak into the first
		row(t, c, "cold", 60, "1Mi", 1, 90000, 60000), row(t, c, "ms2m", 60, "1Mi", 1, 45000, 0),
		row(t, c, "direct", 60, "1Mi", 1, 30000, 100),
	}
	tb := NewTable(rows, c.Modes)
	if !slices.Equal(tb.Modes, []string{"cold", "ms2m", "direct"}) || !slices.Equal(tb.Rates, []int{10, 60}) {
		t.Fatalf("modes %v rates %v", tb.Modes, tb.Rates)
	}
	if s := tb.Summary(Cell{"ms2m", 10, "1Mi"}, ColTotal); s != (Summary{N: 3, Median: 5500, Min: 5000, Max: 6000}) {
		t.Fatalf("ms2m at 10 msg/s: %+v", s)
	}
	check := func(c Cell, col, against string, want float64) {
		t.Helper()
		got, ok := tb.Ratio(c, col, against)
		if !ok || math.Abs(got-want) > 1e-9 {
			t.Errorf("%v %s ÷ %s = %v (%v), want %v", c, col, against, got, ok, want)
		}
	}
	check(Cell{"ms2m", 10, "1Mi"}, ColTotal, "cold", 5500.0/51000)
	check(Cell{"ms2m", 60, "1Mi"}, ColTotal, "cold", 0.5)
	check(Cell{"direct", 60, "1Mi"}, ColTotal, "ms2m", 30000.0/45000)
	check(Cell{"ms2m", 10, "1Mi"}, ColDowntime, "cold", 0)
	check(Cell{"direct", 60, "1Mi"}, ColDowntime, "ms2m", math.Inf(1))
	if _, ok := tb.Ratio(Cell{"direct", 10, "1Mi"}, ColTotal, "cold"); ok {
		t.Error("a ratio for a cell the mode never ran")
	}
}

func TestTableKeepsWhatCounts(t *testing.T) {
	c := testConfig(t)
	ok1 := row(t, c, "ms2m", 10, "1Mi", 1, 5000, 0)
	// a failed migration's time is its rollback: not a sample of the mode
	bad := row(t, c, "ms2m", 10, "1Mi", 2, 900, 0)
	bad.Phase, bad.Error, bad.Digest = "Failed", "replay timed out", ""
	// a run retried: the retry counts, the first attempt does not
	first := row(t, c, "ms2m", 10, "1Mi", 3, 99999, 0)
	first.Error = "target did not reach seq"
	retry := row(t, c, "ms2m", 10, "1Mi", 3, 6000, 0)
	// an earlier definition of the mode
	old := row(t, c, "ms2m", 10, "1Mi", 4, 1, 0)
	old.Spec = `{"migrationStrategy":"ShadowPod","replayMode":"Drain"}`
	tb := NewTable([]Row{ok1, bad, first, retry, old}, c.Modes)
	cell := Cell{"ms2m", 10, "1Mi"}
	if s := tb.Summary(cell, ColTotal); s != (Summary{N: 2, Median: 5500, Min: 5000, Max: 6000}) {
		t.Fatalf("summary %+v: want the two completed runs", s)
	}
	if runs, failed, verified := tb.Counts(cell); runs != 3 || failed != 1 || verified != 2 {
		t.Fatalf("counts %d/%d/%d", runs, failed, verified)
	}
	if tb.Stale != 2 {
		t.Fatalf("stale %d, want the superseded attempt and the old definition", tb.Stale)
	}
	// States sort by size, not by name.
	big := row(t, c, "ms2m", 10, "512Mi", 1, 1, 0)
	mid := row(t, c, "ms2m", 10, "64Mi", 1, 1, 0)
	if tb := NewTable([]Row{big, ok1, mid}, c.Modes); !slices.Equal(tb.States, []string{"1Mi", "64Mi", "512Mi"}) {
		t.Fatalf("states %v", tb.States)
	}
}
