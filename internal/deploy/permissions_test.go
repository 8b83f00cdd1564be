package deploy_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ms2m/ms2m/internal/deploy"
	"github.com/ms2m/ms2m/internal/testenv"
)

// The permissions each of ms2m's ServiceAccounts holds, as the API server
// computes them from config/ (what `kubectl apply -k config/default`
// installs), must be exactly these: a new one is either needed (and added
// here, where a reviewer sees it) or a finding.

var admin *rest.Config

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithAPIServer(m, func(_ *envtest.Environment, cfg *rest.Config) error {
		admin = cfg
		return nil
	}))
}

const installNS = "ms2m-system"

// want: "verb group/resource[/subresource][#name]", in the install's own
// namespace ("own") and in any other ("elsewhere", which includes the
// cluster-wide rules). The bootstrap rules every authenticated user has
// (discovery, self reviews, cluster trust bundles) are left out.
var want = map[string]struct{ own, elsewhere []string }{
	"ms2m-manager": {
		elsewhere: []string{
			"create /configmaps", "delete /configmaps", "get /configmaps",
			"create events.k8s.io/events", "patch events.k8s.io/events",
			"get /namespaces",
			"get admissionregistration.k8s.io/validatingwebhookconfigurations#ms2m-evictions",
			"patch admissionregistration.k8s.io/validatingwebhookconfigurations#ms2m-evictions",
			"get /nodes", "list /nodes", "watch /nodes",
			"create /pods", "delete /pods", "get /pods", "list /pods", "patch /pods", "watch /pods", "patch /pods/status",
			"create /secrets", "get /secrets",
			"list /services",
			"get apps/deployments", "get apps/replicasets", "update apps/replicasets/finalizers",
			"get apps/statefulsets", "patch apps/statefulsets", "update apps/statefulsets/finalizers",
			"get certificates.k8s.io/certificatesigningrequests", "list certificates.k8s.io/certificatesigningrequests",
			"watch certificates.k8s.io/certificatesigningrequests",
			"update certificates.k8s.io/certificatesigningrequests/approval", "update certificates.k8s.io/certificatesigningrequests/status",
			"approve certificates.k8s.io/signers#ms2m.io/agent", "sign certificates.k8s.io/signers#ms2m.io/agent",
			"create coordination.k8s.io/leases", "delete coordination.k8s.io/leases", "get coordination.k8s.io/leases",
			"list coordination.k8s.io/leases", "patch coordination.k8s.io/leases", "update coordination.k8s.io/leases", "watch coordination.k8s.io/leases",
			"list discovery.k8s.io/endpointslices",
			// A Sequential migration an eviction starts counts against
			// the pod's disruption budget, as the eviction would.
			"list policy/poddisruptionbudgets", "update policy/poddisruptionbudgets/status",
			"list migration.ms2m.io/migrationpolicies",
			"create migration.ms2m.io/statefulmigrations", "get migration.ms2m.io/statefulmigrations", "list migration.ms2m.io/statefulmigrations",
			"patch migration.ms2m.io/statefulmigrations", "swap-identity migration.ms2m.io/statefulmigrations",
			"update migration.ms2m.io/statefulmigrations", "watch migration.ms2m.io/statefulmigrations",
			"update migration.ms2m.io/statefulmigrations/finalizers",
			"get migration.ms2m.io/statefulmigrations/status", "patch migration.ms2m.io/statefulmigrations/status",
			"update migration.ms2m.io/statefulmigrations/status",
			"get node.k8s.io/runtimeclasses", "list node.k8s.io/runtimeclasses", "watch node.k8s.io/runtimeclasses",
		},
	},
	"ms2m-agent": {
		// Its peers, in its own namespace only.
		own: []string{"get /pods", "list /pods", "watch /pods"},
		elsewhere: []string{
			"get /nodes", "patch /nodes/status",
			// No kubelet's checkpoint API (config/kubelet-engine adds it,
			// for every node: see TestKubeletEngineAddsOnlyNodesCheckpoint).
			"create certificates.k8s.io/certificatesigningrequests", "get certificates.k8s.io/certificatesigningrequests",
			"list certificates.k8s.io/certificatesigningrequests", "watch certificates.k8s.io/certificatesigningrequests",
		},
	},
}

// baseline is what any authenticated ServiceAccount may do.
func baseline(rules []string) []string {
	return slices.DeleteFunc(rules, func(r string) bool {
		return strings.Contains(r, "selfsubject") || strings.Contains(r, "authentication.k8s.io/") || strings.Contains(r, "/clustertrustbundles") || strings.HasPrefix(r, "nonresource ")
	})
}

func TestServiceAccountsHoldExactlyTheirPermissions(t *testing.T) {
	testenv.NeedsServices(t)
	ctx := context.Background()
	objs, err := deploy.Render(deploy.Options{Repo: testenv.RepoRoot()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(admin, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := c.Create(ctx, o); err != nil && !(o.GetKind() == "Namespace" && apierrors.IsAlreadyExists(err)) {
				t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
	if err := c.Create(ctx, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": "tenant"}}}); err != nil {
		t.Fatal(err)
	}
	for sa, w := range want {
		t.Run(sa, func(t *testing.T) {
			own, elsewhere := rulesOf(t, sa, installNS), rulesOf(t, sa, "tenant")
			onlyOwn := slices.DeleteFunc(slices.Clone(own), func(r string) bool { return slices.Contains(elsewhere, r) })
			compare(t, "in "+installNS+" only", onlyOwn, w.own)
			compare(t, "everywhere", elsewhere, w.elsewhere)
		})
	}
}

// rulesOf is what the API server says sa may do in ns (cluster-wide rules
// included), as "verb group/resource[#name]".
func rulesOf(t *testing.T, sa, ns string) []string {
	t.Helper()
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + installNS + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + installNS, "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	review := &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}
	if err := c.Create(context.Background(), review); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range review.Status.ResourceRules {
		for _, v := range r.Verbs {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					if len(r.ResourceNames) == 0 {
						out = append(out, fmt.Sprintf("%s %s/%s", v, g, res))
					}
					for _, n := range r.ResourceNames {
						out = append(out, fmt.Sprintf("%s %s/%s#%s", v, g, res, n))
					}
				}
			}
		}
	}
	for _, r := range review.Status.NonResourceRules {
		for _, v := range r.Verbs {
			out = append(out, "nonresource "+v)
		}
	}
	out = baseline(out)
	sort.Strings(out)
	return slices.Compact(out)
}

func compare(t *testing.T, where string, got, want []string) {
	t.Helper()
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("%s: may %q, which it was not meant to", where, g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s: may not %q any more (update the list if that is meant)", where, w)
		}
	}
}

// config/kubelet-engine grants the agents one more thing, the kubelet's
// checkpoint API (never nodes/proxy, which would open every kubelet's whole
// API), and turns the engine on; nothing else changes.
func TestKubeletEngineAddsOnlyNodesCheckpoint(t *testing.T) {
	base, err := deploy.Render(deploy.Options{Repo: testenv.RepoRoot()})
	if err != nil {
		t.Fatal(err)
	}
	with, err := deploy.Render(deploy.Options{Repo: testenv.RepoRoot(), Overlay: "kubelet-engine"})
	if err != nil {
		t.Fatal(err)
	}
	key := func(o *unstructured.Unstructured) string { return o.GetKind() + "/" + o.GetName() }
	seen := map[string]bool{}
	for _, o := range base {
		seen[key(o)] = true
	}
	var added []string
	for _, o := range with {
		if !seen[key(o)] {
			added = append(added, key(o))
		}
	}
	sort.Strings(added)
	if !slices.Equal(added, []string{"ClusterRole/ms2m-agent-kubelet", "ClusterRoleBinding/ms2m-agent-kubelet"}) {
		t.Fatalf("config/kubelet-engine adds %v", added)
	}
	for _, o := range with {
		switch key(o) {
		case "ClusterRole/ms2m-agent-kubelet":
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			if fmt.Sprint(rules) != "[map[apiGroups:[] resources:[nodes/checkpoint] verbs:[create]]]" {
				t.Errorf("rules %v, want create nodes/checkpoint alone", rules)
			}
		case "ClusterRoleBinding/ms2m-agent-kubelet":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			if fmt.Sprint(subjects) != "[map[kind:ServiceAccount name:ms2m-agent namespace:ms2m-system]]" {
				t.Errorf("subjects %v", subjects)
			}
		case "DaemonSet/ms2m-agent":
			ctrs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			args := fmt.Sprint(ctrs[0].(map[string]any)["args"])
			if !strings.Contains(args, "--kubelet-engine") {
				t.Errorf("the agent's args lack --kubelet-engine: %s", args)
			}
		}
	}
}
