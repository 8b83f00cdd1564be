package policy

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func pol(name string, ns, pod *metav1.LabelSelector) v1alpha1.MigrationPolicy {
	return v1alpha1.MigrationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.MigrationPolicySpec{NamespaceSelector: ns, PodSelector: pod}}
}

func labelsSel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func TestSelect(t *testing.T) {
	catchAll := pol("z-default", nil, nil)
	tenant := pol("tenant", labelsSel("team", "shop"), nil)
	tenantDB := pol("tenant-db", labelsSel("team", "shop"), labelsSel("app", "db"))
	tieA := pol("a-tie", nil, labelsSel("app", "db"))
	tieB := pol("b-tie", nil, labelsSel("app", "db"))
	expr := pol("not-batch", nil, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"batch"}}}})

	cases := []struct {
		name     string
		policies []v1alpha1.MigrationPolicy
		ns, pod  map[string]string
		want     string
	}{
		{"no policies", nil, nil, nil, ""},
		{"nothing selects the pod", []v1alpha1.MigrationPolicy{tenant}, map[string]string{"team": "web"}, nil, ""},
		{"an empty selector selects everything", []v1alpha1.MigrationPolicy{catchAll}, nil, nil, "z-default"},
		{"the namespace's labels count", []v1alpha1.MigrationPolicy{catchAll, tenant}, map[string]string{"team": "shop"}, nil, "tenant"},
		{"the most labels win", []v1alpha1.MigrationPolicy{tenantDB, catchAll, tenant},
			map[string]string{"team": "shop"}, map[string]string{"app": "db"}, "tenant-db"},
		{"a tie goes to the first name", []v1alpha1.MigrationPolicy{tieB, tieA}, nil, map[string]string{"app": "db"}, "a-tie"},
		{"expressions count and match", []v1alpha1.MigrationPolicy{catchAll, expr}, nil, map[string]string{"tier": "web"}, "not-batch"},
		{"expressions exclude", []v1alpha1.MigrationPolicy{catchAll, expr}, nil, map[string]string{"tier": "batch"}, "z-default"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Select(c.policies, c.ns, c.pod)
			if err != nil {
				t.Fatal(err)
			}
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != c.want {
				t.Fatalf("selected %q, want %q", name, c.want)
			}
		})
	}
}

func TestSelectRefusesAnInvalidSelector(t *testing.T) {
	broken := pol("broken", nil, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "app", Operator: metav1.LabelSelectorOpIn}}}) // In needs values
	_, err := Select([]v1alpha1.MigrationPolicy{pol("open", nil, nil), broken}, nil, map[string]string{"app": "db"})
	if err == nil || !strings.Contains(err.Error(), "MigrationPolicy broken has an invalid podSelector") {
		t.Fatalf("err = %v", err)
	}
}

func TestApplyDefaults(t *testing.T) {
	p := pol("p", nil, nil)
	p.Spec.Defaults = &v1alpha1.MigrationDefaults{
		MigrationStrategy: v1alpha1.StrategySequential, TransferMode: v1alpha1.TransferDirect,
		MemoryTechnique: v1alpha1.MemoryStream, ReplayCutoffSeconds: 7, CheckpointImageRepository: "reg.example/ckpt",
		Timeouts: &v1alpha1.MigrationTimeouts{Total: &metav1.Duration{Duration: time.Minute}, Restore: &metav1.Duration{Duration: 9 * time.Second}},
	}
	spec := &v1alpha1.StatefulMigrationSpec{SourcePod: "c", TransferMode: v1alpha1.TransferRegistry,
		Timeouts: &v1alpha1.MigrationTimeouts{Total: &metav1.Duration{Duration: 2 * time.Minute}}}
	got := ApplyDefaults(spec, &p)
	if got.MigrationStrategy != v1alpha1.StrategySequential || got.MemoryTechnique != v1alpha1.MemoryStream ||
		got.ReplayCutoffSeconds != 7 || got.CheckpointImageRepository != "reg.example/ckpt" {
		t.Fatalf("defaults not inherited: %+v", got)
	}
	if got.TransferMode != v1alpha1.TransferRegistry || got.Timeouts.Total.Duration != 2*time.Minute {
		t.Fatalf("the spec's own settings must win: %+v", got)
	}
	if got.Timeouts.Restore == nil || got.Timeouts.Restore.Duration != 9*time.Second {
		t.Fatalf("timeouts are inherited field by field: %+v", got.Timeouts)
	}
	if spec.MigrationStrategy != "" || spec.Timeouts.Restore != nil {
		t.Fatalf("the spec itself changed: %+v", spec)
	}
	if got := ApplyDefaults(spec, nil); got.MigrationStrategy != "" {
		t.Fatalf("no policy, no defaults: %+v", got)
	}
}

func TestAdmit(t *testing.T) {
	running := []Running{
		{Name: "a/one", SourceNode: "node-a", TargetNode: "node-b"},
		{Name: "b/two", SourceNode: "node-c", TargetNode: "node-b"},
	}
	cases := []struct {
		name   string
		limits v1alpha1.MigrationLimits
		from   string
		to     string
		ok     bool
		says   string
	}{
		{"no limits", v1alpha1.MigrationLimits{}, "node-a", "node-b", true, ""},
		{"cluster full", v1alpha1.MigrationLimits{ParallelMigrationsPerCluster: ptr.To[int32](2)}, "node-d", "node-e", false,
			"allows 2 migration(s) at once in the cluster, and 2 run (a/one, b/two)"},
		{"cluster has room", v1alpha1.MigrationLimits{ParallelMigrationsPerCluster: ptr.To[int32](3)}, "node-d", "node-e", true, ""},
		{"source node busy", v1alpha1.MigrationLimits{ParallelOutboundMigrationsPerNode: ptr.To[int32](1)}, "node-a", "node-e", false,
			"out of node node-a, and 1 runs (a/one)"},
		{"another source node", v1alpha1.MigrationLimits{ParallelOutboundMigrationsPerNode: ptr.To[int32](1)}, "node-d", "node-b", true, ""},
		{"target node busy", v1alpha1.MigrationLimits{ParallelInboundMigrationsPerNode: ptr.To[int32](2)}, "node-d", "node-b", false,
			"into node node-b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, why := Admit(&c.limits, "limited", running, c.from, c.to)
			if ok != c.ok || !strings.Contains(why, c.says) {
				t.Fatalf("Admit = %v, %q; want %v saying %q", ok, why, c.ok, c.says)
			}
			if !ok && !strings.HasPrefix(why, "MigrationPolicy limited allows") {
				t.Fatalf("the reason must name the policy: %q", why)
			}
		})
	}
	if ok, _ := Admit(nil, "none", running, "node-a", "node-b"); !ok {
		t.Fatal("no limits must admit")
	}
}
