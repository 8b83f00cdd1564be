package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/staging"
)

// unpacked is a checkpoint of one cut, as Unpack leaves it: the requested
// container's dump at the root, the others' under staging.OthersDir.
func unpacked(t *testing.T, l staging.Layout, key staging.Key, others ...string) string {
	t.Helper()
	dir, err := l.Begin(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{"."}, others...) {
		base := dir
		if d != "." {
			base = filepath.Join(dir, staging.OthersDir, d)
		}
		if err := os.MkdirAll(filepath.Join(base, staging.ImagesDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, staging.ImagesDir, "inventory.img"), []byte(d), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Each container of a cut is staged for itself, from its own dump; a cut
// that lacks one of the containers asked for stages none of them.
func TestStageOthersStagesEachContainerOfTheCut(t *testing.T) {
	l := staging.Layout{Dir: t.TempDir()}
	key := staging.Key{Namespace: "shop", Pod: "consumer-0-shadow", Container: "app"}
	req := agentapi.StageRequest{ID: "mig-1", Namespace: key.Namespace, Pod: key.Pod, Container: key.Container, Others: []string{"counter", "logs"}}

	dir := unpacked(t, l, key, "counter", "logs", "extra")
	if err := stageOthers(l, req, dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range req.Others {
		k := key
		k.Container = name
		got, _, err := l.Claim(k, "ctr-"+name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b, err := os.ReadFile(filepath.Join(got, staging.ImagesDir, "inventory.img")); err != nil || string(b) != name {
			t.Errorf("%s was staged from %q (%v), not from its own dump", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, staging.OthersDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the others' dumps stay in the requested container's staging (%v)", err)
	}

	req.ID, req.Pod = "mig-2", "consumer-1-shadow"
	dir = unpacked(t, l, staging.Key{Namespace: "shop", Pod: req.Pod, Container: "app"}, "counter")
	err := stageOthers(l, req, dir)
	if err == nil || !strings.Contains(err.Error(), "holds no dump of container logs") {
		t.Fatalf("a cut without logs: %v", err)
	}
	if _, err := l.Staged(staging.Key{Namespace: "shop", Pod: req.Pod, Container: "counter"}); !errors.Is(err, staging.ErrNotStaged) {
		t.Errorf("counter was staged from a cut missing logs: %v", err)
	}
}

func TestOthersMustBeOtherContainerNames(t *testing.T) {
	for _, others := range [][]string{{"../etc"}, {"app"}, {"a", "a"}, {""}} {
		if err := validOthers("app", others); err == nil {
			t.Errorf("others %q accepted", others)
		}
	}
	if err := validOthers("app", []string{"counter", "logs"}); err != nil {
		t.Error(err)
	}
}
