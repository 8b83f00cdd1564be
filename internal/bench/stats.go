package bench

import (
	"math"
	"slices"
)

// Summary is a cell's distribution of one metric. With the few repetitions
// a lab affords, the median and the full range say more than a mean and a
// standard deviation would.
type Summary struct {
	N                int
	Median, Min, Max float64
}

// Summarize describes xs; N is 0 for no values.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{N: len(s), Median: median(s), Min: s[0], Max: s[len(s)-1]}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// Spread is Max-Min relative to the median: how far repetitions disagree.
func (s Summary) Spread() float64 {
	if s.N == 0 || s.Median == 0 {
		return math.NaN()
	}
	return (s.Max - s.Min) / math.Abs(s.Median)
}

// Ratio compares two medians: a/b, ok false when either is missing. Zero
// downtime is common, so 0/0 is 1 (the same) and x/0 is +Inf.
func Ratio(a, b Summary) (r float64, ok bool) {
	if a.N == 0 || b.N == 0 {
		return 0, false
	}
	if b.Median == 0 {
		if a.Median == 0 {
			return 1, true
		}
		return math.Inf(1), true
	}
	return a.Median / b.Median, true
}
