package engine_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/runtimehandler"
	"github.com/ms2m/ms2m/internal/staging"
)

func TestCheckIdentityRefusesAnotherPodsContainer(t *testing.T) {
	want := engine.Container{Namespace: "shop", Pod: "consumer-0", PodUID: "u1", Name: "app", ID: "abc"}
	ok := engine.Identity{Namespace: "shop", Pod: "consumer-0", PodUID: "u1", Name: "app", Type: "container"}
	if err := engine.CheckIdentity(want, ok); err != nil {
		t.Fatalf("the requested container refused: %v", err)
	}
	for name, c := range map[string]struct {
		got  engine.Identity
		says string
	}{
		"other namespace":  {engine.Identity{Namespace: "bank", Pod: "consumer-0", PodUID: "u1", Name: "app"}, `namespace is "bank"`},
		"other pod":        {engine.Identity{Namespace: "shop", Pod: "vault-0", PodUID: "u1", Name: "app"}, `pod is "vault-0"`},
		"other container":  {engine.Identity{Namespace: "shop", Pod: "consumer-0", PodUID: "u1", Name: "sidecar"}, `container name is "sidecar"`},
		"pod of that name": {engine.Identity{Namespace: "shop", Pod: "consumer-0", PodUID: "u2", Name: "app"}, `pod UID is "u2"`},
		"sandbox":          {engine.Identity{Namespace: "shop", Pod: "consumer-0", PodUID: "u1", Type: "sandbox"}, "is a sandbox"},
		"no annotations":   {engine.Identity{}, `namespace is ""`},
	} {
		err := engine.CheckIdentity(want, c.got)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want a refusal saying %q", name, err, c.says)
		}
	}
}

// An overlay upper directory written as a layer and applied to a fresh
// copy of the image's files gives the container's files back: new and
// changed files, deleted ones (whiteouts) and emptied directories (opaque).
func TestUpperDiffRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("whiteouts are character devices: mknod needs root")
	}
	upper, lower, staged := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(root, p, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// the image
	write(lower, "etc/app.conf", "image")
	write(lower, "var/gone.txt", "image")
	write(lower, "cache/old-1", "image")
	write(lower, "cache/old-2", "image")
	// what the container did, as overlayfs records it
	write(upper, "etc/app.conf", "changed")
	write(upper, "data/state.db", "new")
	if err := os.MkdirAll(filepath.Join(upper, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(upper, "var/gone.txt"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	write(upper, "cache/fresh", "new")
	if err := unix.Setxattr(filepath.Join(upper, "cache"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Skipf("no trusted xattrs here: %v", err)
	}

	if err := engine.WriteUpperDiff(upper, filepath.Join(staged, staging.RootfsDiffTar)); err != nil {
		t.Fatal(err)
	}
	if err := runtimehandler.ApplyRootfsChanges(lower, staged); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"etc/app.conf": "changed", "data/state.db": "new", "cache/fresh": "new"} {
		if b, err := os.ReadFile(filepath.Join(lower, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", p, b, err, want)
		}
	}
	for _, p := range []string{"var/gone.txt", "cache/old-1", "cache/old-2"} {
		if _, err := os.Lstat(filepath.Join(lower, p)); !os.IsNotExist(err) {
			t.Errorf("%s survived its deletion (%v)", p, err)
		}
	}
}

// The check reads the host's procfs: run on the host, the test process
// shares its PID namespace; a process in a namespace of its own shows two
// PIDs on its NSpid line.
func TestSharesPIDNamespace(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		status string
		want   bool
	}{
		"host":      {"Name:\tagent\nNSpid:\t2925\nNSpgid:\t2925\n", true},
		"container": {"Name:\tagent\nNSpid:\t2925\t1\n", false},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(c.status), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := engine.SharesPIDNamespace(p)
		if err != nil || got != c.want {
			t.Errorf("%s: %v, %v; want %v", name, got, err, c.want)
		}
	}
}
