package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scripted plays the lab: every run completes with a total that depends
// on the mode and rate, and cancel interrupts the bench at a given run.
type scripted struct {
	calls    []string
	cancelAt int
	cancel   context.CancelFunc
}

func (s *scripted) Do(_ context.Context, run Run) Row {
	s.calls = append(s.calls, run.String())
	if len(s.calls) == s.cancelAt {
		s.cancel()
	}
	r := completed(run)
	total := float64(run.Rate) * 100
	downtime := 0.0
	if run.Mode.Name == "cold" {
		total, downtime = total*4, 30000
	}
	r.Values = map[string]float64{ColTotal: total, ColDowntime: downtime, ColFreeze: 300, ColLost: 0, ColDuplicated: 0,
		PhaseColumn("Checkpointing"): total / 2, PhaseColumn("Replaying"): total / 2}
	return r
}

func TestExecuteResumes(t *testing.T) {
	c := testConfig(t)
	m, _ := c.Matrix("small", Preset{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	s := &scripted{cancelAt: 3, cancel: cancel}
	first := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	o := Options{Dir: dir, Matrix: m, Meta: Meta{Preset: "small", Config: c, Commit: "aaaa", Started: first, Command: "ms2m bench"}, Progress: io.Discard}
	if err := Execute(ctx, s, o); err == nil {
		t.Fatal("an interrupted bench reported success")
	}
	rows, _ := ReadCSVFile(filepath.Join(dir, ResultsFile))
	if len(rows) != 2 {
		t.Fatalf("%d rows after an interruption at run 3: want the two finished runs, not the interrupted one", len(rows))
	}
	s2 := &scripted{}
	o.Meta.Commit, o.Meta.Started = "bbbb", first.Add(time.Hour)
	if err := Execute(context.Background(), s2, o); err != nil {
		t.Fatal(err)
	}
	if len(s2.calls) != len(m.Runs())-2 || s2.calls[0] != m.Runs()[2].String() {
		t.Fatalf("resumed with %v", s2.calls)
	}
	s3 := &scripted{}
	o.Meta.Commit = "cccc"
	if err := Execute(context.Background(), s3, o); err != nil || len(s3.calls) != 0 {
		t.Fatalf("a complete directory ran %v (%v)", s3.calls, err)
	}
	// The directory's history: made at aaaa, completed at bbbb; the third
	// session added nothing and is not in it.
	meta, err := ReadMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Commit != "aaaa" || !meta.Started.Equal(first) || len(meta.Resumed) != 1 || meta.Resumed[0].Commit != "bbbb" {
		t.Fatalf("bench.json after two sessions and an idle one: commit %s started %s resumed %+v", meta.Commit, meta.Started, meta.Resumed)
	}
	report, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal("no report written")
	}
	if !strings.Contains(string(report), "Resumed 2026-01-02 04:04 UTC: `ms2m bench` at commit `bbbb`") {
		t.Fatalf("the report does not say the matrix was resumed at another commit:\n%s", report)
	}
}

func TestReport(t *testing.T) {
	c := testConfig(t)
	m, _ := c.Matrix("small", Preset{})
	dir := t.TempDir()
	if err := Execute(context.Background(), &scripted{}, Options{Dir: dir, Matrix: m, Meta: Meta{Preset: "small", Config: c, Command: "ms2m bench --preset small"}, Progress: io.Discard}); err != nil {
		t.Fatal(err)
	}
	// one failure, to be listed; one run (of ms2m) missing, as in a matrix not done
	rows, _ := ReadCSVFile(filepath.Join(dir, ResultsFile))
	rows = rows[1:]
	mode, _ := c.Mode("direct")
	bad := failed(Run{Mode: mode, Rate: 60, State: "1Mi", Rep: 1})
	bad.Error = "migration failed in Replaying: ReplayTimedOut | 90s"
	// and one that failed but rolled back with the source's stream intact
	rolledBack := failed(Run{Mode: mode, Rate: 10, State: "1Mi", Rep: 1})
	rolledBack.Digest, rolledBack.Values = "match", map[string]float64{ColLost: 0, ColDuplicated: 0}
	if err := WriteCSVFile(filepath.Join(dir, ResultsFile), append(rows, bad, rolledBack)); err != nil {
		t.Fatal(err)
	}
	// regenerated from the directory alone
	for _, f := range []string{ReportFile, "downtime.png"} {
		os.Remove(filepath.Join(dir, f))
	}
	if err := WriteReport(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for _, want := range []string{
		"# ms2m bench: small preset",
		fmt.Sprintf("**Every one of the small preset's 4 cells has a run; %d of its %d runs done, and 3 cells have all 2 repetitions**", len(m.Runs())-1, len(m.Runs())),
		"## Runs per cell",
		"| `ms2m` | 1Mi | 1 | 2 |",
		"| `direct` | 1Mi | 1 (1 failed) | 1 (1 failed) |",
		"`ms2m bench --preset small`",
		"| `cold` (baseline) | StatefulSet | SDK, prefetch 0, 0s/message | Sequential |",
		"| `ms2m` (MS2M) | Pod | SDK, prefetch 0, 0s/message | ShadowPod |",
		// ms2m at 10 msg/s: 1 s against cold's 4 s; no downtime against 30 s
		"| `ms2m` | 1Mi | 1.0 s, 0.25×, 1.00× | 6.0 s, 0.25×, 1.00× |",
		"| `ms2m` | 1Mi | 0 ms, 0.00×, 1.00× | 0 ms, 0.00×, 1.00× |",
		"| `cold` | 1Mi | 4.0 s [4.0 s–4.0 s] | 24.0 s [24.0 s–24.0 s] |",
		"## Phases at 60 msg/s",
		"| `ms2m` | 1Mi | — | 3.0 s (50%) |",
		"| `direct` | 60 | 1Mi | 1 | Failed | migration failed in Replaying: ReplayTimedOut \\| 90s |",
		"| `ms2m` | 3 | 3 | 0 | 0 | 0 | 0 | 0 |", // one of its 4 runs missing
		"| `direct` | 2 | 0 | 2 | 1 | 0 | 0 | 0 |",
		"![Total migration time vs message rate, state 1Mi](total-vs-rate-1Mi.png)",
		"![Service downtime per mode (all rates and states)](downtime.png)",
		"(phases-60-1Mi.png)",
		"(freeze-vs-state.png)",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(report)
	}
	for _, f := range []string{"total-vs-rate-1Mi.png", "downtime.png", "phases-60-1Mi.png", "freeze-vs-state.png"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
			t.Errorf("%s: not a PNG (%d bytes, %v)", f, len(b), err)
		}
	}
}
