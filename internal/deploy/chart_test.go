package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/deploy"
	"github.com/ms2m/ms2m/internal/testenv"
)

// helmTemplate renders charts/ms2m with the real helm, as `helm install`
// would into installNS, CRDs included.
func helmTemplate(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	chart := filepath.Join(testenv.RepoRoot(), "charts", "ms2m")
	argv := append([]string{"template", "ms2m", chart, "--namespace", installNS, "--include-crds"}, args...)
	cmd := exec.Command(testenv.Helm(t), argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v: %s", strings.Join(argv, " "), err, stderr.String())
	}
	objs, err := deploy.Decode(out)
	if err != nil {
		t.Fatalf("helm template's output: %v", err)
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

func TestChartLints(t *testing.T) {
	testenv.NeedsServices(t)
	cmd := exec.Command(testenv.Helm(t), "lint", "--strict", filepath.Join(testenv.RepoRoot(), "charts", "ms2m"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

// What the chart installs with its default values, the API server takes:
// every object passes a server-side dry run (schemas, CEL rules, the
// admission chain), and the chart has every part of an install.
func TestChartRendersWhatTheAPIServerTakes(t *testing.T) {
	testenv.NeedsServices(t)
	ctx := context.Background()
	c, err := client.New(admin, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: installNS}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	objs := helmTemplate(t)
	// CRDs first, as helm installs them, so the rest may use them.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return boolRank(b.GetKind() == "CustomResourceDefinition") - boolRank(a.GetKind() == "CustomResourceDefinition")
	})
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			// Applied for real: the same CRDs as envtest's (see below).
			if err := c.Patch(ctx, o.DeepCopy(), client.Apply, client.FieldOwner("chart-test"), client.ForceOwnership); err != nil {
				t.Errorf("CRD %s: %v", o.GetName(), err)
			}
			continue
		}
		if err := c.Patch(ctx, o.DeepCopy(), client.Apply, client.FieldOwner("chart-test"), client.ForceOwnership, client.DryRunAll); err != nil {
			t.Errorf("%s %s: the API server refuses it: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for _, want := range []struct{ kind, name string }{
		{"CustomResourceDefinition", "statefulmigrations.migration.ms2m.io"},
		{"CustomResourceDefinition", "migrationpolicies.migration.ms2m.io"},
		{"Deployment", "ms2m-manager"}, {"DaemonSet", "ms2m-agent"},
		{"ServiceAccount", "ms2m-manager"}, {"ServiceAccount", "ms2m-agent"},
		{"ClusterRole", "ms2m-manager"}, {"ClusterRole", "ms2m-agent"},
		{"RuntimeClass", ""}, {"ValidatingAdmissionPolicy", ""},
		{"ValidatingWebhookConfiguration", "ms2m-evictions"},
		{"Service", "ms2m-manager-metrics"},
	} {
		if find(objs, want.kind, want.name) == nil {
			t.Errorf("the chart renders no %s %s", want.kind, want.name)
		}
	}
	if find(objs, "ServiceMonitor", "") != nil {
		t.Error("a ServiceMonitor by default, where the Prometheus operator may not be installed")
	}

}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// The chart and config/ (kustomize) install the same API and grant the
// same permissions: a rule added to one and not the other is a finding.
func TestChartMatchesConfig(t *testing.T) {
	testenv.NeedsServices(t)
	t.Run("default", func(t *testing.T) { matchConfig(t, helmTemplate(t), "") })
	t.Run("kubelet-engine", func(t *testing.T) {
		matchConfig(t, helmTemplate(t, "--set", "agent.kubeletEngine=true"), "kubelet-engine")
	})
}

func matchConfig(t *testing.T, chart []*unstructured.Unstructured, overlay string) {
	config, err := deploy.Render(deploy.Options{Repo: testenv.RepoRoot(), Overlay: overlay})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range chart {
		switch h.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if find(config, h.GetKind(), h.GetName()) == nil {
				t.Errorf("the chart has %s %s, config/ has not", h.GetKind(), h.GetName())
			}
		}
	}
	for _, c := range config {
		var field string
		switch c.GetKind() {
		case "CustomResourceDefinition":
			field = "spec"
		case "ClusterRole", "Role":
			field = "rules"
		case "ClusterRoleBinding", "RoleBinding":
			field = "roleRef"
		default:
			continue
		}
		h := find(chart, c.GetKind(), c.GetName())
		if h == nil {
			t.Errorf("config/ has %s %s, the chart has not", c.GetKind(), c.GetName())
			continue
		}
		if !reflect.DeepEqual(normalized(c.Object[field]), normalized(h.Object[field])) {
			t.Errorf("%s %s: the chart's %s differ from config/'s", c.GetKind(), c.GetName(), field)
		}
	}
}

// normalized is v as JSON would carry it, so that YAML's ints and
// JSON's floats compare equal.
func normalized(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// Values switch parts off and on: the eviction webhook and the admission
// policy off, a ServiceMonitor on where the Prometheus operator's API is,
// pointing at the manager's metrics port.
func TestChartValues(t *testing.T) {
	testenv.NeedsServices(t)
	off := helmTemplate(t, "--set", "evictionWebhook=false", "--set", "admissionPolicy=false")
	for _, kind := range []string{"ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if o := find(off, kind, ""); o != nil {
			t.Errorf("switched off, the chart still renders %s %s", kind, o.GetName())
		}
	}
	if args := managerArgs(t, off); !slices.Contains(args, "--webhook-port=0") {
		t.Errorf("the eviction webhook is off, but the manager still serves it: %v", args)
	}

	on := helmTemplate(t, "--set", "metrics.serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1",
		"--set", "metrics.grafanaDashboard.enabled=true")
	sm := find(on, "ServiceMonitor", "")
	if sm == nil {
		t.Fatal("metrics.serviceMonitor.enabled renders no ServiceMonitor")
	}
	svc := find(on, "Service", "ms2m-manager-metrics")
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	labels := svc.GetLabels()
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s, which the metrics Service does not carry (%v)", k, v, labels)
		}
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(eps) != 1 || len(ports) != 1 || eps[0].(map[string]any)["port"] != ports[0].(map[string]any)["name"] {
		t.Errorf("the ServiceMonitor scrapes %v, the Service serves %v", eps, ports)
	}
	if none := helmTemplate(t, "--set", "metrics.serviceMonitor.enabled=true"); find(none, "ServiceMonitor", "") != nil {
		t.Error("a ServiceMonitor where the Prometheus operator's API is not installed")
	}
	if find(on, "ConfigMap", "ms2m-grafana-dashboard") == nil {
		t.Fatal("metrics.grafanaDashboard.enabled renders no dashboard ConfigMap")
	}
	// The dashboard is the chart's file, whole.
	dash, _, _ := unstructured.NestedString(find(on, "ConfigMap", "ms2m-grafana-dashboard").Object, "data", "ms2m.json")
	file, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "ms2m", "dashboards", "ms2m.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal([]byte(dash), &got); err != nil {
		t.Fatalf("the dashboard ConfigMap holds no JSON: %v", err)
	}
	_ = json.Unmarshal(file, &want)
	if !reflect.DeepEqual(got, want) {
		t.Error("the dashboard ConfigMap differs from charts/ms2m/dashboards/ms2m.json")
	}

}

func managerArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	d := find(objs, "Deployment", "ms2m-manager")
	ctrs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	var args []string
	for _, a := range ctrs[0].(map[string]any)["args"].([]any) {
		args = append(args, a.(string))
	}
	return args
}
