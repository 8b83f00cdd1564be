package lab

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
)

// Module is the project's module path.
const Module = "github.com/ms2m/ms2m"

// RepoRoot finds the project's source tree from the working directory
// upwards: the lab builds its Kubernetes binaries and images from it.
func RepoRoot() (string, error) {
	if r := os.Getenv("MS2M_REPO"); r != "" {
		return r, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+Module)) {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", errors.New("not inside the ms2m source tree (set MS2M_REPO)")
		}
	}
}
