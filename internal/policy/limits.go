package policy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Running is a migration that holds a slot: started (out of Pending) and
// not yet Completed or Failed.
type Running struct {
	// Name is namespace/name, for the message that says what is waited for.
	Name                   string
	SourceNode, TargetNode string
}

// Admit says whether a migration from source to target may start while
// running run, under limits; when not, why, naming the limit and what
// holds it. Every running migration counts, whichever policy governs it.
func Admit(limits *v1alpha1.MigrationLimits, policyName string, running []Running, source, target string) (bool, string) {
	if limits == nil {
		return true, ""
	}
	type limit struct {
		max   *int32
		what  string
		count func(Running) bool
	}
	for _, l := range []limit{
		{limits.ParallelMigrationsPerCluster, "in the cluster", func(Running) bool { return true }},
		{limits.ParallelOutboundMigrationsPerNode, "out of node " + source, func(r Running) bool { return r.SourceNode == source }},
		{limits.ParallelInboundMigrationsPerNode, "into node " + target, func(r Running) bool { return r.TargetNode == target }},
	} {
		if l.max == nil {
			continue
		}
		var holding []string
		for _, r := range running {
			if l.count(r) {
				holding = append(holding, r.Name)
			}
		}
		if len(holding) >= int(*l.max) {
			sort.Strings(holding)
			return false, fmt.Sprintf("MigrationPolicy %s allows %d migration(s) at once %s, and %d run%s (%s): this one starts when one of them ends",
				policyName, *l.max, l.what, len(holding), plural(len(holding)), strings.Join(holding, ", "))
		}
	}
	return true, ""
}

func plural(n int) string {
	if n == 1 {
		return "s"
	}
	return ""
}
