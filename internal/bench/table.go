package bench

import (
	"cmp"
	"slices"
)

// Cell is one point of the matrix, all repetitions.
type Cell struct {
	Mode  string
	Rate  int
	State string
}

// Table is the results arranged by cell.
type Table struct {
	Modes  []string
	Rates  []int
	States []string
	// Stale counts rows left out: measured under an earlier definition of
	// a mode, or superseded by a retry of the same run.
	Stale int
	cells map[Cell][]Row
}

// NewTable arranges rows. Modes gives the order and the current
// definitions; rows of a mode under another definition are left out, and
// of several rows for one run (retries) the last counts.
func NewTable(rows []Row, modes []Mode) *Table {
	t := &Table{cells: map[Cell][]Row{}}
	current := map[string]Mode{}
	for _, m := range modes {
		current[m.Name] = m
		t.Modes = append(t.Modes, m.Name)
	}
	latest := map[Key]int{}
	for i, r := range rows {
		latest[r.Key()] = i
	}
	for i, r := range rows {
		m, known := current[r.Mode]
		if latest[r.Key()] != i || known && (m.SpecKey() != r.Spec || m.Workload != r.Workload) {
			t.Stale++
			continue
		}
		c := Cell{r.Mode, r.Rate, r.State}
		t.cells[c] = append(t.cells[c], r)
		if !slices.Contains(t.Modes, r.Mode) {
			t.Modes = append(t.Modes, r.Mode)
		}
		if !slices.Contains(t.Rates, r.Rate) {
			t.Rates = append(t.Rates, r.Rate)
		}
		if !slices.Contains(t.States, r.State) {
			t.States = append(t.States, r.State)
		}
	}
	t.Modes = slices.DeleteFunc(t.Modes, func(m string) bool { return !t.hasMode(m) })
	slices.Sort(t.Rates)
	slices.SortStableFunc(t.States, func(a, b string) int {
		x, _ := StateBytes(a)
		y, _ := StateBytes(b)
		return cmp.Compare(x, y)
	})
	return t
}

func (t *Table) hasMode(m string) bool {
	for c := range t.cells {
		if c.Mode == m {
			return true
		}
	}
	return false
}

// Rows of a cell, in the order they were measured.
func (t *Table) Rows(c Cell) []Row { return t.cells[c] }

// Summary of a metric over the cell's runs whose migration completed: a
// failed migration's timings measure its rollback, not the technique.
func (t *Table) Summary(c Cell, col string) Summary {
	var xs []float64
	for _, r := range t.cells[c] {
		if v, ok := r.Value(col); ok && r.Completed() {
			xs = append(xs, v)
		}
	}
	return Summarize(xs)
}

// Ratio is the cell's median over the same cell's median in mode other.
func (t *Table) Ratio(c Cell, col, other string) (float64, bool) {
	return Ratio(t.Summary(c, col), t.Summary(Cell{other, c.Rate, c.State}, col))
}

// Counts are a cell's runs: all, failed, and verified exactly-once.
func (t *Table) Counts(c Cell) (runs, failed, verified int) {
	for _, r := range t.cells[c] {
		runs++
		if r.Failed() {
			failed++
		}
		if r.Verified() {
			verified++
		}
	}
	return runs, failed, verified
}

// All is every row kept, cell by cell in matrix order.
func (t *Table) All() []Row {
	var out []Row
	for _, st := range t.States {
		for _, rate := range t.Rates {
			for _, m := range t.Modes {
				out = append(out, t.cells[Cell{m, rate, st}]...)
			}
		}
	}
	return out
}
