package bench

import (
	"fmt"
	"math"
)

// unit says how a metric's numbers read.
type unit int

const (
	unitMS unit = iota
	unitBytes
	unitSeconds
	unitCount
)

func (u unit) format(v float64) string {
	switch u {
	case unitMS:
		if math.Abs(v) < 1000 {
			return fmt.Sprintf("%.0f ms", v)
		}
		return fmt.Sprintf("%.1f s", v/1000)
	case unitBytes:
		return formatBytes(v)
	case unitSeconds:
		return fmt.Sprintf("%.2f s", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func formatBytes(v float64) string {
	for _, u := range []struct {
		div  float64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if math.Abs(v) >= u.div {
			return fmt.Sprintf("%.1f %s", v/u.div, u.name)
		}
	}
	return fmt.Sprintf("%.0f B", v)
}

// formatSummary is "median [min–max]", the range left out for a single
// value; runs > s.N says how many of the cell's runs it covers.
func formatSummary(s Summary, u unit, runs int) string {
	if s.N == 0 {
		if runs > 0 {
			return fmt.Sprintf("— (0 of %d)", runs)
		}
		return "—"
	}
	out := u.format(s.Median)
	if s.N > 1 {
		out += fmt.Sprintf(" [%s–%s]", u.format(s.Min), u.format(s.Max))
	}
	if runs > s.N {
		out += fmt.Sprintf(" (%d of %d)", s.N, runs)
	}
	return out
}

func formatRatio(r float64, ok bool) string {
	switch {
	case !ok:
		return "—"
	case math.IsInf(r, 1):
		return "∞"
	case r >= 100:
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}
