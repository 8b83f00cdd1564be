package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/testenv"
)

func policy(name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "migration.ms2m.io/v1alpha1", "kind": "MigrationPolicy",
		"metadata": map[string]any{"name": name}, "spec": spec}}
	return u
}

// A MigrationPolicy the API server takes, and ones it refuses saying what
// to fix.
func TestMigrationPolicyValidation(t *testing.T) {
	testenv.NeedsServices(t)
	ok := policy("valid-policy", map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"team": "shop"}},
		"allowed": map[string]any{"memoryTechniques": []any{"StopAndCopy", "Stream"}, "transferModes": []any{"Direct"},
			"strategies": []any{"ShadowPod"}, "handoffs": []any{"Replay", "Handoff"}, "checkpointRegistries": []any{"registry.shop:5000"}},
		"limits":           map[string]any{"parallelOutboundMigrationsPerNode": 1, "completionTimeoutPerGiB": "150s", "bandwidthPerMigration": "64Mi"},
		"defaults":         map[string]any{"transferMode": "Direct", "timeouts": map[string]any{"restore": "2m", "progress": "90s"}},
		"evictionStrategy": "MigrateOrEvict",
	})
	if err := k8s.Create(context.Background(), ok, client.FieldValidation("Strict")); err != nil {
		t.Fatalf("a valid policy was refused: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ok) })
	for _, tc := range []struct {
		name string
		spec map[string]any
		want []string
	}{
		{"zero parallelism", map[string]any{"limits": map[string]any{"parallelMigrationsPerCluster": 0}},
			[]string{"spec.limits.parallelMigrationsPerCluster", "greater than or equal to 1"}},
		{"per-GiB timeout not a duration", map[string]any{"limits": map[string]any{"completionTimeoutPerGiB": "soon"}},
			[]string{"spec.limits.completionTimeoutPerGiB", "positive duration"}},
		{"zero bandwidth", map[string]any{"limits": map[string]any{"bandwidthPerMigration": "0"}},
			[]string{"spec.limits.bandwidthPerMigration", "positive number of bytes per second"}},
		{"bandwidth not a quantity", map[string]any{"limits": map[string]any{"bandwidthPerMigration": "fast"}},
			[]string{"spec.limits.bandwidthPerMigration"}},
		{"progress timeout not a duration", map[string]any{"defaults": map[string]any{"timeouts": map[string]any{"progress": "-5s"}}},
			[]string{"spec.defaults.timeouts.progress", "positive duration"}},
		{"Auto as an allowed technique", map[string]any{"allowed": map[string]any{"memoryTechniques": []any{"Auto"}}},
			[]string{"allowed.memoryTechniques lists what a plan resolves to", "never Auto"}},
		{"unknown technique", map[string]any{"allowed": map[string]any{"memoryTechniques": []any{"Teleport"}}},
			[]string{"spec.allowed.memoryTechniques[0]", `"StopAndCopy"`}},
		{"auto as a strategy", map[string]any{"allowed": map[string]any{"strategies": []any{"auto"}}},
			[]string{"ShadowPod or Sequential"}},
		{"bad eviction strategy", map[string]any{"evictionStrategy": "Sometimes"},
			[]string{"spec.evictionStrategy", `"Migrate"`}},
		{"repository with a tag", map[string]any{"defaults": map[string]any{"checkpointImageRepository": "reg.shop/ckpt:v1"}},
			[]string{"without tag or digest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), policy("bad-"+strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"), tc.spec), client.FieldValidation("Strict"))
			wantInvalid(t, err, tc.want...)
		})
	}
}
