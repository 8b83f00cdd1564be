package host

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestUnescapeAndUnder(t *testing.T) {
	if got := unescape(`/var/tmp/a\040b`); got != "/var/tmp/a b" {
		t.Fatalf("unescape = %q", got)
	}
	if !under("/var/tmp/lab/x", "/var/tmp/lab") || under("/var/tmp/lab2", "/var/tmp/lab") || !under("/var/tmp/lab", "/var/tmp/lab/") {
		t.Fatal("under")
	}
}

func TestDiff(t *testing.T) {
	before := &Snapshot{Mounts: []string{"/"}, NetNS: []string{"net:[1]", "net:[2]"}, Sysctls: map[string]string{"kernel.panic": "0"},
		Files: map[string]string{RuncCRIUConf: "absent"}}
	same := &Snapshot{Mounts: []string{"/"}, NetNS: []string{"net:[1]"}, Sysctls: map[string]string{"kernel.panic": "0"},
		Files: map[string]string{RuncCRIUConf: "absent"}}
	if d := Diff(before, same); len(d) != 0 {
		t.Fatalf("a namespace another program dropped counted as a leftover: %v", d)
	}
	after := &Snapshot{Mounts: []string{"/", "/tmp/checkpoint1"}, NetNS: []string{"net:[1]", "net:[3]"},
		Sysctls: map[string]string{"kernel.panic": "10"}, Files: map[string]string{RuncCRIUConf: "sha256:ab"},
		Procs: []string{"pid 7 containerd-shim"}}
	want := []string{
		"mount added: /tmp/checkpoint1", "netns added: net:[3]", "lab process left: pid 7 containerd-shim",
		"sysctl kernel.panic: 0 before, 10 after", "file /etc/criu/runc.conf: absent before, sha256:ab after",
	}
	if d := Diff(before, after); !slices.Equal(d, want) {
		t.Fatalf("Diff = %q", d)
	}
}

func TestInstallAndRestoreFile(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "rec.json")
	// A file that did not exist, in directories that did not exist.
	target := filepath.Join(dir, "etc", "criu", "runc.conf")
	if err := InstallFile(rec, target, []byte("tcp-close\n")); err != nil {
		t.Fatal(err)
	}
	// A second install keeps the first record.
	if err := InstallFile(rec, target, []byte("tcp-close\nskip-in-flight\n")); err != nil {
		t.Fatal(err)
	}
	if err := RestoreFile(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc")); !os.IsNotExist(err) {
		t.Fatalf("directories made for the file are left: %v", err)
	}
	// A file that existed gets its content and mode back.
	if err := os.WriteFile(target+".x", nil, 0o644); err == nil {
		t.Fatal("parent should be gone")
	}
	existing := filepath.Join(dir, "runc.conf")
	if err := os.WriteFile(existing, []byte("tcp-established\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := InstallFile(rec, existing, []byte("tcp-close\n")); err != nil {
		t.Fatal(err)
	}
	if err := RestoreFile(rec); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(existing)
	fi, _ := os.Stat(existing)
	if string(b) != "tcp-established\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored %q mode %v", b, fi.Mode())
	}
	if _, err := os.Stat(rec); !os.IsNotExist(err) {
		t.Fatal("record left behind")
	}
}
