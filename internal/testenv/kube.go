package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// StartAPIServer starts a real kube-apiserver and etcd (the binaries in
// KUBEBUILDER_ASSETS, built by hack/kube-binaries.sh) with ms2m's CRDs
// installed. It is for TestMain; an error means the suite must fail, not
// skip.
func StartAPIServer() (*envtest.Environment, *rest.Config, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests through `make test` (hack/kube-binaries.sh builds the API server)")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	if err := installAdmission(cfg); err != nil {
		_ = env.Stop()
		return nil, nil, err
	}
	return env, cfg, nil
}

// installAdmission applies config/admission, the admission policy every
// install carries beside the CRDs, so that tests create migrations through
// the same checks a cluster makes.
func installAdmission(cfg *rest.Config) error {
	path := filepath.Join(RepoRoot(), "config", "admission", "policy.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(context.Background(), u); err != nil {
			return fmt.Errorf("installing %s %s from %s: %w", u.GetKind(), u.GetName(), path, err)
		}
	}
	return nil
}

// Scheme knows the built-in kinds and ms2m's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

// MainWithAPIServer is a TestMain for a package whose tests share one real
// API server: under -short it only runs the tests (they skip themselves);
// otherwise it starts the server, lets setup make the package's clients,
// runs the tests and stops the server. It returns the exit code.
func MainWithAPIServer(m *testing.M, setup func(env *envtest.Environment, cfg *rest.Config) error) int {
	if ShortFlag() {
		return m.Run()
	}
	env, cfg, err := StartAPIServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop() //nolint:errcheck
	if err := setup(env, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
