package bench

import (
	"fmt"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Figure is one plot written next to the report.
type Figure struct {
	File, Title string
}

// WritePlots draws the report's figures into dir; a figure without data is
// left out.
func WritePlots(dir string, t *Table, c *Config) ([]Figure, error) {
	var figs []Figure
	add := func(file, title string, p *plot.Plot, height vg.Length) error {
		if p == nil {
			return nil
		}
		if err := p.Save(7*vg.Inch, height, filepath.Join(dir, file)); err != nil {
			return fmt.Errorf("plot %s: %w", file, err)
		}
		figs = append(figs, Figure{File: file, Title: title})
		return nil
	}
	for _, st := range t.States {
		title := "Total migration time vs message rate, state " + st
		if err := add("total-vs-rate-"+st+".png", title, totalVsRate(t, st, title), 4.5*vg.Inch); err != nil {
			return nil, err
		}
	}
	if err := add("downtime.png", "Service downtime per mode (all rates and states)", downtimePerMode(t), boxHeight(t)); err != nil {
		return nil, err
	}
	if rate, ok := closestRate(t, PhaseRate); ok {
		for _, st := range t.States {
			title := fmt.Sprintf("Phases at %d msg/s, state %s (medians)", rate, st)
			if err := add(fmt.Sprintf("phases-%d-%s.png", rate, st), title, phaseBreakdown(t, rate, st, title), boxHeight(t)); err != nil {
				return nil, err
			}
		}
	}
	if err := add("freeze-vs-state.png", "Checkpoint freeze vs state size (all rates)", freezeVsState(t), 4.5*vg.Inch); err != nil {
		return nil, err
	}
	return figs, nil
}

func boxHeight(t *Table) vg.Length { return vg.Length(1.5+0.35*float64(len(t.Modes))) * vg.Inch }

// point is a median with its range.
type point struct{ x, med, lo, hi float64 }

type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

// series draws one mode: medians joined by a line, ranges as error bars.
func series(p *plot.Plot, i int, name string, pts []point) error {
	if len(pts) == 0 {
		return nil
	}
	ep := errPoints{XYs: make(plotter.XYs, len(pts)), YErrors: make(plotter.YErrors, len(pts))}
	for j, q := range pts {
		ep.XYs[j] = plotter.XY{X: q.x, Y: q.med}
		ep.YErrors[j].Low, ep.YErrors[j].High = q.med-q.lo, q.hi-q.med
	}
	l, s, err := plotter.NewLinePoints(ep.XYs)
	if err != nil {
		return err
	}
	l.Color, l.Dashes = plotutil.Color(i), plotutil.Dashes(i)
	s.Color, s.Shape = plotutil.Color(i), plotutil.Shape(i)
	eb, err := plotter.NewYErrorBars(ep)
	if err != nil {
		return err
	}
	eb.Color = plotutil.Color(i)
	p.Add(l, s, eb)
	p.Legend.Add(name, l, s)
	return nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// roomForLegend starts the y axis at zero and leaves the top fifth of a
// line plot to the legend, at the upper left where rising curves are not.
func roomForLegend(p *plot.Plot) {
	p.Legend.Left = true
	p.Y.Min = 0
	p.Y.Max *= 1.25
}

func totalVsRate(t *Table, st, title string) *plot.Plot {
	p := newPlot(title, "message rate (msg/s)", "total migration time (s)")
	var ticks []plot.Tick
	for _, r := range t.Rates {
		ticks = append(ticks, plot.Tick{Value: float64(r), Label: strconv.Itoa(r)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	return linePerMode(p, t, func(mode string) (pts []point) {
		for _, rate := range t.Rates {
			if s := t.Summary(Cell{mode, rate, st}, ColTotal); s.N > 0 {
				pts = append(pts, point{float64(rate), s.Median / 1000, s.Min / 1000, s.Max / 1000})
			}
		}
		return pts
	})
}

// linePerMode draws one line per mode from the points pointsOf gives it, or
// returns nil when no mode has any.
func linePerMode(p *plot.Plot, t *Table, pointsOf func(mode string) []point) *plot.Plot {
	drawn := false
	for i, mode := range t.Modes {
		pts := pointsOf(mode)
		if series(p, i, mode, pts) == nil && len(pts) > 0 {
			drawn = true
		}
	}
	if !drawn {
		return nil
	}
	roomForLegend(p)
	return p
}

func downtimePerMode(t *Table) *plot.Plot {
	p := newPlot("Service downtime per mode (all rates and states)", "downtime (s)", "")
	var names []string
	for _, mode := range t.Modes {
		var vs plotter.Values
		for _, r := range t.All() {
			if v, ok := r.Value(ColDowntime); ok && r.Mode == mode && r.Completed() {
				vs = append(vs, v/1000)
			}
		}
		if len(vs) == 0 {
			continue
		}
		b, err := plotter.NewBoxPlot(vg.Points(14), float64(len(names)), vs)
		if err != nil {
			continue
		}
		b.Horizontal = true
		b.FillColor = plotutil.Color(len(names))
		p.Add(b)
		names = append(names, mode)
	}
	if len(names) == 0 {
		return nil
	}
	p.NominalY(names...)
	p.X.Min = 0
	p.X.Max *= 1.05
	return p
}

func phaseBreakdown(t *Table, rate int, st, title string) *plot.Plot {
	p := newPlot(title, "time (s)", "")
	var modes []string
	for _, mode := range t.Modes {
		if t.Summary(Cell{mode, rate, st}, ColTotal).N > 0 {
			modes = append(modes, mode)
		}
	}
	if len(modes) == 0 {
		return nil
	}
	var below *plotter.BarChart
	longest := 0.0
	for j, ph := range v1alpha1.Phases {
		vs := make(plotter.Values, len(modes))
		for i, mode := range modes {
			vs[i] = t.Summary(Cell{mode, rate, st}, PhaseColumn(ph)).Median / 1000
		}
		b, err := plotter.NewBarChart(vs, vg.Points(16))
		if err != nil {
			return nil
		}
		b.Horizontal = true
		b.Color = plotutil.Color(j)
		b.LineStyle.Width = 0
		if below != nil {
			b.StackOn(below)
		}
		p.Add(b)
		p.Legend.Add(string(ph), b)
		below = b
	}
	for i := range modes {
		longest = max(longest, below.BarHeight(i))
	}
	p.NominalY(modes...)
	// room on the right for the legend, clear of the longest bar
	p.X.Min, p.X.Max = 0, longest*1.4
	return p
}

func freezeVsState(t *Table) *plot.Plot {
	p := newPlot("Checkpoint freeze vs consumer state size (all rates)", "state size (MiB)", "freeze (ms)")
	var ticks []plot.Tick
	for _, st := range t.States {
		b, _ := StateBytes(st)
		ticks = append(ticks, plot.Tick{Value: float64(b) / (1 << 20), Label: st})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if len(t.States) > 1 {
		p.X.Scale = plot.LogScale{}
	}
	return linePerMode(p, t, func(mode string) (pts []point) {
		for _, st := range t.States {
			var xs []float64
			for _, rate := range t.Rates {
				for _, r := range t.Rows(Cell{mode, rate, st}) {
					if v, ok := r.Value(ColFreeze); ok && r.Completed() {
						xs = append(xs, v)
					}
				}
			}
			if s := Summarize(xs); s.N > 0 {
				b, _ := StateBytes(st)
				pts = append(pts, point{float64(b) / (1 << 20), s.Median, s.Min, s.Max})
			}
		}
		return pts
	})
}
