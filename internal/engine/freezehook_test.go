package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/internal/criuhook"
)

func TestFindFreezeHookReadsRuncsCRIUConfiguration(t *testing.T) {
	host := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(host, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, p), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if c := FindFreezeHook(host, "/etc/criu/runc.conf"); c.OK || !strings.Contains(c.Reason, "no such file") {
		t.Errorf("no configuration: %+v", c)
	}
	write("/etc/criu/runc.conf", "tcp-close\nskip-in-flight\n")
	if c := FindFreezeHook(host, "/etc/criu/runc.conf"); c.OK || !strings.Contains(c.Reason, "runtime-handler-config criu-hook") {
		t.Errorf("no hook: %+v", c)
	}
	// another tool's action script is not ms2m's hook
	write("/usr/local/bin/other-hook", "#!/bin/sh\nexit 0\n")
	write("/etc/criu/runc.conf", "tcp-close\naction-script /usr/local/bin/other-hook\n")
	if c := FindFreezeHook(host, "/etc/criu/runc.conf"); c.OK {
		t.Errorf("another script taken for the hook: %+v", c)
	}
	write("/usr/local/bin/ms2m-criu-hook", criuhook.Script("/usr/local/bin/ms2m-runtime"))
	write("/etc/criu/runc.conf", "tcp-close\naction-script /usr/local/bin/other-hook\naction-script /usr/local/bin/ms2m-criu-hook\n")
	if c := FindFreezeHook(host, "/etc/criu/runc.conf"); !c.OK || !strings.Contains(c.Reason, "/usr/local/bin/ms2m-criu-hook") {
		t.Errorf("hook installed: %+v", c)
	}
}

func TestFreezerOfPrefersAV1FreezerOnAHybridHost(t *testing.T) {
	host := t.TempDir()
	r := Runc{HostRoot: host, Root: "/run/runc"}
	write := func(id, state string) {
		t.Helper()
		dir := filepath.Join(host, "run/runc", id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("hybrid", `{"cgroup_paths":{"":"/sys/fs/cgroup/unified/k/c1","freezer":"/sys/fs/cgroup/freezer/k/c1","memory":"/sys/fs/cgroup/memory/k/c1"}}`)
	write("unified", `{"cgroup_paths":{"":"/sys/fs/cgroup/k/c2"}}`)
	write("none", `{"cgroup_paths":{}}`)
	if q, err := r.freezerOf("hybrid"); err != nil || q != (criuhook.Request{Dir: "/sys/fs/cgroup/freezer/k/c1"}) {
		t.Errorf("hybrid: %+v %v", q, err)
	}
	if q, err := r.freezerOf("unified"); err != nil || q != (criuhook.Request{Dir: "/sys/fs/cgroup/k/c2", V2: true}) {
		t.Errorf("unified: %+v %v", q, err)
	}
	if _, err := r.freezerOf("none"); err == nil {
		t.Error("a state naming no cgroup")
	}
	if _, err := r.freezerOf("missing"); err == nil {
		t.Error("no state")
	}
}
