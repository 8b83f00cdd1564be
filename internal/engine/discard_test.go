package engine

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDiscardRemovesOnlyItsCheckpointsDump(t *testing.T) {
	host := t.TempDir()
	r := Runc{HostRoot: host, DumpDir: "/run/ms2m/dumps/node-a"}
	for _, id := range []string{"mig-1", "mig-2"} {
		if err := os.MkdirAll(filepath.Join(host, r.DumpDir, id, "checkpoint"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, r.DumpDir, id, "checkpoint", "pages-1.img"), []byte("memory"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Discard("mig-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(host, r.DumpDir, "mig-1")); !os.IsNotExist(err) {
		t.Errorf("mig-1's dump is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(host, r.DumpDir, "mig-2", "checkpoint", "pages-1.img")); err != nil {
		t.Errorf("mig-2's dump went too: %v", err)
	}
	if err := r.Discard("mig-3"); err != nil {
		t.Errorf("nothing kept must be no error: %v", err)
	}
	for _, bad := range []string{"", "..", "../x", "a/b", ".hidden"} {
		if err := r.Discard(bad); err == nil {
			t.Errorf("Discard(%q) accepted", bad)
		}
	}
}
