package bench

import (
	"fmt"
	"slices"
)

// Matrix is what one bench invocation covers.
type Matrix struct {
	Modes  []Mode
	Rates  []int
	States []string
	Reps   int
}

// Run is one cell of the matrix, one repetition.
type Run struct {
	Mode  Mode
	Rate  int
	State string
	Rep   int
}

// Key identifies a run across invocations: a resumed bench skips the keys
// its CSV holds. The spec is part of it, so editing a mode's definition
// measures it afresh instead of mixing two techniques under one name.
type Key struct {
	Mode, Workload, Spec string
	Rate                 int
	State                string
	Rep                  int
}

// Key of the run.
func (r Run) Key() Key {
	return Key{Mode: r.Mode.Name, Workload: r.Mode.Workload, Spec: r.Mode.SpecKey(), Rate: r.Rate, State: r.State, Rep: r.Rep}
}

func (r Run) String() string {
	return fmt.Sprintf("%s rate=%d state=%s rep=%d", r.Mode.Name, r.Rate, r.State, r.Rep)
}

// Matrix expands a preset, with the non-empty fields of override replacing
// the preset's (the command line's --mode, --rate, --state, --reps).
func (c *Config) Matrix(preset string, override Preset) (Matrix, error) {
	p, ok := c.Presets[preset]
	if !ok {
		names := make([]string, 0, len(c.Presets))
		for n := range c.Presets {
			names = append(names, n)
		}
		slices.Sort(names)
		return Matrix{}, fmt.Errorf("unknown preset %q (have %v)", preset, names)
	}
	if len(override.Modes) > 0 {
		p.Modes = override.Modes
	}
	if len(override.Rates) > 0 {
		p.Rates = override.Rates
	}
	if len(override.States) > 0 {
		p.States = override.States
	}
	if override.Reps > 0 {
		p.Reps = override.Reps
	}
	names := map[string]bool{}
	for _, m := range c.Modes {
		names[m.Name] = true
	}
	if err := p.validate(names); err != nil {
		return Matrix{}, err
	}
	m := Matrix{Rates: p.Rates, States: p.States, Reps: max(p.Reps, 1)}
	if len(p.Modes) == 0 {
		m.Modes = c.Modes
	}
	for _, n := range p.Modes {
		mode, _ := c.Mode(n)
		m.Modes = append(m.Modes, mode)
	}
	if len(m.Modes) == 0 || len(m.Rates) == 0 || len(m.States) == 0 {
		return Matrix{}, fmt.Errorf("preset %s covers no run (modes %d, rates %v, states %v)", preset, len(m.Modes), m.Rates, m.States)
	}
	return m, nil
}

// Runs lists the matrix repetition by repetition, and within one cell every
// mode back to back: modes are compared under the same conditions, and an
// interrupted full run has whole repetitions rather than whole modes.
func (m Matrix) Runs() []Run {
	var out []Run
	for rep := 1; rep <= m.Reps; rep++ {
		for _, st := range m.States {
			for _, rate := range m.Rates {
				for _, mode := range m.Modes {
					out = append(out, Run{Mode: mode, Rate: rate, State: st, Rep: rep})
				}
			}
		}
	}
	return out
}

// Pending is the runs whose key no done row has; with retryFailed, runs
// whose latest row failed are run again.
func Pending(runs []Run, done []Row, retryFailed bool) []Run {
	latest := map[Key]Row{}
	for _, r := range done {
		latest[r.Key()] = r
	}
	var out []Run
	for _, r := range runs {
		row, ok := latest[r.Key()]
		if ok && !(retryFailed && row.Failed()) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// Coverage is how much of a matrix the rows hold, cell by cell: a run
// counts once its key has a row, failed or not (a failed migration is a
// result). Covered cells have at least one run, complete cells all of theirs.
type Coverage struct {
	Runs, RunsDone    int
	Cells             int
	Covered, Complete int
}

// Coverage of the matrix by done.
func (m Matrix) Coverage(done []Row) Coverage {
	have := map[Key]bool{}
	for _, r := range done {
		have[r.Key()] = true
	}
	var cov Coverage
	for _, st := range m.States {
		for _, rate := range m.Rates {
			for _, mode := range m.Modes {
				n := 0
				for rep := 1; rep <= m.Reps; rep++ {
					if have[Run{Mode: mode, Rate: rate, State: st, Rep: rep}.Key()] {
						n++
					}
				}
				cov.Cells++
				cov.Runs += m.Reps
				cov.RunsDone += n
				if n > 0 {
					cov.Covered++
				}
				if n == m.Reps {
					cov.Complete++
				}
			}
		}
	}
	return cov
}
