package bench

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Summary
	}{
		{nil, Summary{}},
		{[]float64{7}, Summary{N: 1, Median: 7, Min: 7, Max: 7}},
		{[]float64{9, 1, 5}, Summary{N: 3, Median: 5, Min: 1, Max: 9}},
		{[]float64{4, 1, 3, 2}, Summary{N: 4, Median: 2.5, Min: 1, Max: 4}},
	} {
		in := append([]float64(nil), tc.in...)
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("Summarize reordered its input: %v", tc.in)
			}
		}
	}
	if s := Summarize([]float64{8, 10, 12}).Spread(); s != 0.4 {
		t.Errorf("spread %v, want (12-8)/10", s)
	}
	if s := Summarize([]float64{0, 0}).Spread(); !math.IsNaN(s) {
		t.Errorf("spread around a zero median %v, want NaN", s)
	}
}

func TestRatio(t *testing.T) {
	s := func(med float64) Summary { return Summary{N: 1, Median: med, Min: med, Max: med} }
	for _, tc := range []struct {
		name   string
		a, b   Summary
		want   float64
		wantOK bool
	}{
		{"faster", s(5000), s(50000), 0.1, true},
		{"slower", s(300), s(100), 3, true},
		{"both without downtime", s(0), s(0), 1, true},
		{"downtime where the reference had none", s(250), s(0), math.Inf(1), true},
		{"no downtime against some", s(0), s(31000), 0, true},
		{"reference not measured", s(1), Summary{}, 0, false},
		{"mode not measured", Summary{}, s(1), 0, false},
	} {
		got, ok := Ratio(tc.a, tc.b)
		if ok != tc.wantOK || (ok && got != tc.want) {
			t.Errorf("%s: Ratio = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}
