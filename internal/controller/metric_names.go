package controller

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricFamilies names each metric family the manager exports and whether
// it is a histogram (its series carry _bucket, _sum and _count), for the
// dashboard's tests.
func MetricFamilies() map[string]bool {
	out := map[string]bool{}
	for _, c := range exported {
		ch := make(chan *prometheus.Desc, 16)
		c.c.Describe(ch)
		close(ch)
		for d := range ch {
			if m := fqName.FindStringSubmatch(d.String()); m != nil {
				out[m[1]] = c.histogram
			}
		}
	}
	return out
}

// A Desc says its name only in its String().
var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)
