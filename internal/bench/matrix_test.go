package bench

import (
	"slices"
	"testing"
)

func testConfig(t *testing.T) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(`
baseline: cold
reference: ms2m
modes:
- {name: cold, workload: StatefulSet, spec: {migrationStrategy: Sequential}}
- {name: ms2m, workload: Pod, spec: {migrationStrategy: ShadowPod}}
- {name: direct, workload: Pod, spec: {migrationStrategy: ShadowPod, transferMode: Direct}}
presets:
  small: {modes: [ms2m, cold], rates: [10, 60], states: [1Mi], reps: 2}
  all: {rates: [10], states: [1Mi, 64Mi]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func names(runs []Run) []string {
	var out []string
	for _, r := range runs {
		out = append(out, r.String())
	}
	return out
}

func TestMatrixOrder(t *testing.T) {
	m, err := testConfig(t).Matrix("small", Preset{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ms2m rate=10 state=1Mi rep=1", "cold rate=10 state=1Mi rep=1",
		"ms2m rate=60 state=1Mi rep=1", "cold rate=60 state=1Mi rep=1",
		"ms2m rate=10 state=1Mi rep=2", "cold rate=10 state=1Mi rep=2",
		"ms2m rate=60 state=1Mi rep=2", "cold rate=60 state=1Mi rep=2",
	}
	if got := names(m.Runs()); !slices.Equal(got, want) {
		t.Fatalf("runs\n%v\nwant (repetition by repetition, modes back to back)\n%v", got, want)
	}
}

func TestMatrixOverrides(t *testing.T) {
	c := testConfig(t)
	m, err := c.Matrix("all", Preset{Rates: []int{120}, Reps: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Modes) != 3 || !slices.Equal(m.Rates, []int{120}) || len(m.States) != 2 || m.Reps != 3 {
		t.Fatalf("matrix %+v: want every mode (preset lists none), rate 120, both states, 3 reps", m)
	}
	m, err = c.Matrix("all", Preset{})
	if err != nil || m.Reps != 1 {
		t.Fatalf("reps %d (%v): a preset without reps runs once", m.Reps, err)
	}
	if _, err := c.Matrix("all", Preset{Modes: []string{"nope"}}); err == nil {
		t.Fatal("an unknown mode on the command line was accepted")
	}
	if _, err := c.Matrix("huge", Preset{}); err == nil {
		t.Fatal("an unknown preset was accepted")
	}
}

func TestPendingResumes(t *testing.T) {
	c := testConfig(t)
	m, _ := c.Matrix("small", Preset{})
	runs := m.Runs()
	done := []Row{completed(runs[0]), failed(runs[1]), completed(runs[2])}
	if got := Pending(runs, done, false); len(got) != len(runs)-3 || got[0].Key() != runs[3].Key() {
		t.Fatalf("pending %v: want all but the three recorded", names(got))
	}
	if got := Pending(runs, done, true); len(got) != len(runs)-2 || got[0].Key() != runs[1].Key() {
		t.Fatalf("pending with retry %v: want the failed run again", names(got))
	}
	// A retry that succeeded is the run's latest row: nothing to redo.
	done = append(done, completed(runs[1]))
	if got := Pending(runs, done, true); len(got) != len(runs)-3 {
		t.Fatalf("pending %v after a successful retry", names(got))
	}
	// Redefining a mode measures it afresh.
	edited := runs[0]
	edited.Mode.Spec = []byte(`{"migrationStrategy":"ShadowPod","replayMode":"Drain"}`)
	if got := Pending([]Run{edited}, done, false); len(got) != 1 {
		t.Fatal("a run of a redefined mode was skipped as done")
	}
}

func TestCoverage(t *testing.T) {
	c := testConfig(t)
	m, _ := c.Matrix("small", Preset{}) // 2 modes × 2 rates × 1 state × 2 reps
	runs := m.Runs()
	if got := m.Coverage(nil); got != (Coverage{Runs: 8, Cells: 4}) {
		t.Fatalf("empty: %+v", got)
	}
	// Repetition 1 of three cells, the fourth cell's only run failed: a
	// failed run is a result, so every cell is covered, none complete.
	done := []Row{completed(runs[0]), completed(runs[1]), completed(runs[2]), failed(runs[3])}
	if got := m.Coverage(done); got != (Coverage{Runs: 8, RunsDone: 4, Cells: 4, Covered: 4}) {
		t.Fatalf("rep 1 done: %+v", got)
	}
	// Repetition 2 of the first cell completes it; rows outside the
	// matrix (another mode) change nothing.
	other, _ := c.Mode("direct")
	done = append(done, completed(runs[4]), completed(Run{Mode: other, Rate: 10, State: "1Mi", Rep: 1}))
	if got := m.Coverage(done); got != (Coverage{Runs: 8, RunsDone: 5, Cells: 4, Covered: 4, Complete: 1}) {
		t.Fatalf("one cell complete: %+v", got)
	}
	if got := m.Coverage(done[1:]); got.Covered != 4 || got.Complete != 0 {
		t.Fatalf("rep 2 without rep 1 covers the cell but does not complete it: %+v", got)
	}
}

func completed(r Run) Row {
	row := newRow(r)
	row.Phase = "Completed"
	row.Digest = "match"
	return row
}

func failed(r Run) Row {
	row := newRow(r)
	row.Phase = "Failed"
	row.Error = "migration failed"
	return row
}
