package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

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
	return env, cfg, nil
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
