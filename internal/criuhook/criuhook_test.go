package criuhook

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cgroupWithProcess makes a real cgroup under the host's hierarchy at
// root, moves a sleeping process into it, and removes both at the end.
func cgroupWithProcess(t *testing.T, root string) (string, *exec.Cmd) {
	t.Helper()
	return cgroupWith(t, root, "sleep", "60")
}

// cgroupWith is cgroupWithProcess for the process of a command.
func cgroupWith(t *testing.T, root string, name string, args ...string) (string, *exec.Cmd) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make cgroups")
	}
	if _, err := os.Stat(root); err != nil {
		t.Skipf("no cgroup hierarchy at %s on this host", root)
	}
	dir := filepath.Join(root, fmt.Sprintf("ms2m-criuhook-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup at %s: %v", dir, err)
	}
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, thaw := range []struct{ f, v string }{{"freezer.state", "THAWED"}, {"cgroup.freeze", "0"}} {
			_ = os.WriteFile(filepath.Join(dir, thaw.f), []byte(thaw.v), 0)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	return dir, cmd
}

func TestFreezeFreezesARealCgroup(t *testing.T) {
	for _, c := range []struct {
		root string
		v2   bool
	}{{"/sys/fs/cgroup/freezer", false}, {"/sys/fs/cgroup/unified", true}, {"/sys/fs/cgroup", true}} {
		t.Run(c.root, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(c.root, "cgroup.controllers")); c.v2 && err != nil {
				t.Skipf("%s is not a cgroup v2 hierarchy", c.root)
			}
			dir, _ := cgroupWithProcess(t, c.root)
			before := time.Now()
			at, err := Freeze(Request{Dir: dir, V2: c.v2}, Timeout)
			if err != nil {
				t.Fatal(err)
			}
			if at.Before(before) || time.Since(at) < 0 {
				t.Errorf("frozen at %s, asked at %s", at, before)
			}
			state, file := "FROZEN", "freezer.state"
			if c.v2 {
				state, file = "frozen 1", "cgroup.events"
			}
			if b, _ := os.ReadFile(filepath.Join(dir, file)); !strings.Contains(string(b), state) {
				t.Errorf("%s says %q after Freeze", file, b)
			}
		})
	}
}

func TestHookFreezesOnlyWhatTheAgentAskedFor(t *testing.T) {
	dir, _ := cgroupWithProcess(t, "/sys/fs/cgroup/freezer")
	images := t.TempDir()
	env := map[string]string{EnvImageDir: images}
	getenv := func(k string) string { return env[k] }
	var stderr bytes.Buffer

	// Not asked: any action of any dump passes untouched.
	for _, action := range []string{"pre-dump", "post-dump", "network-lock", "pre-restore"} {
		env[EnvAction] = action
		if code := Main(getenv, &stderr); code != 0 {
			t.Fatalf("%s without a request: exit %d (%s)", action, code, stderr.String())
		}
	}
	if _, ok, _ := FrozenAt(images); ok {
		t.Fatal("frozen without a request")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "freezer.state")); strings.TrimSpace(string(b)) != "THAWED" {
		t.Fatalf("cgroup %s without a request", b)
	}

	// Asked: frozen at pre-dump, not before.
	if err := Ask(images, Request{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	env[EnvAction] = "network-lock"
	if code := Main(getenv, &stderr); code != 0 {
		t.Fatal(code)
	}
	if _, ok, _ := FrozenAt(images); ok {
		t.Fatal("frozen at another action than pre-dump")
	}
	env[EnvAction] = "pre-dump"
	if code := Main(getenv, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if at, ok, err := FrozenAt(images); !ok || err != nil || at.IsZero() {
		t.Fatalf("no answer: %v %v", ok, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "freezer.state")); strings.TrimSpace(string(b)) != "FROZEN" {
		t.Fatalf("cgroup %s after pre-dump", b)
	}
	if err := Clear(images); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(images); len(entries) != 0 {
		t.Errorf("left in the images: %v", entries)
	}
}

func TestHookRefusesWhatIsNotACgroup(t *testing.T) {
	images := t.TempDir()
	for _, dir := range []string{"/etc", "/sys/fs/cgroup/../../etc", "relative/path", "/sys/fs/cgroupx/a"} {
		if err := Ask(images, Request{Dir: dir}); err == nil {
			t.Errorf("asked to freeze %s", dir)
		}
		// a request written by someone else is refused by the hook too
		_ = os.WriteFile(filepath.Join(images, RequestFile), []byte(`{"dir":"`+dir+`"}`), 0o600)
		var stderr bytes.Buffer
		env := map[string]string{EnvAction: "pre-dump", EnvImageDir: images}
		if code := Main(func(k string) string { return env[k] }, &stderr); code == 0 || !strings.Contains(stderr.String(), "not a cgroup directory") {
			t.Errorf("hook with %s: exit %d, %q", dir, code, stderr.String())
		}
	}
}

func TestScriptRunsTheHookOnlyWhenAsked(t *testing.T) {
	s := Script("/usr/local/bin/ms2m-runtime")
	for _, want := range []string{"#!/bin/sh", Marker, `"$CRTOOLS_SCRIPT_ACTION" = pre-dump`, `"$CRTOOLS_IMAGE_DIR/.ms2m-freeze"`, "exec /usr/local/bin/ms2m-runtime"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	// run by a real shell: asked for nothing, it never runs the binary
	dir := t.TempDir()
	script := filepath.Join(dir, "hook")
	marker := filepath.Join(dir, "ran")
	if err := os.WriteFile(script, []byte(Script("/bin/touch "+marker)), 0o755); err != nil {
		t.Fatal(err)
	}
	images := t.TempDir()
	for _, c := range []struct {
		action string
		ask    bool
		ran    bool
	}{{"post-restore", true, false}, {"pre-dump", false, false}, {"pre-dump", true, true}} {
		_ = os.Remove(marker)
		_ = os.Remove(filepath.Join(images, RequestFile))
		if c.ask {
			_ = os.WriteFile(filepath.Join(images, RequestFile), []byte("{}"), 0o600)
		}
		cmd := exec.Command(script)
		cmd.Env = []string{EnvAction + "=" + c.action, EnvImageDir + "=" + images}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", c.action, err, out)
		}
		if _, err := os.Stat(marker); (err == nil) != c.ran {
			t.Errorf("%s, asked %v: binary ran %v", c.action, c.ask, err == nil)
		}
	}
}

// volumeFileOf makes a file the way the kubelet's atomic writer lays out
// a downward-API volume: in a timestamped directory.
func volumeFileOf(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "..2026_12_08_00_29_30.3928708634")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "name")
	if err := os.WriteFile(f, []byte("consumer-0"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// A process caught reading a file of a kubelet-managed volume could not
// be restored: Freeze lets it finish and freezes it after.
func TestFreezeWaitsForAVolumeFileToClose(t *testing.T) {
	f := volumeFileOf(t)
	dir, _ := cgroupWith(t, "/sys/fs/cgroup/freezer", "sh", "-c", "exec 3<"+f+"; sleep 0.2; exec 3<&-; sleep 60")
	waitOpen(t, dir, f)
	if _, err := Freeze(Request{Dir: dir}, Timeout); err != nil {
		t.Fatal(err)
	}
	if file, err := openVolumeFile(dir); err != nil || file != "" {
		t.Errorf("frozen holding %q open (%v)", file, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "freezer.state")); strings.TrimSpace(string(b)) != "FROZEN" {
		t.Errorf("cgroup %s after Freeze", b)
	}
}

// A process that keeps such a file open fails the freeze, thawed, and the
// error names the file.
func TestFreezeRefusesAVolumeFileKeptOpen(t *testing.T) {
	f := volumeFileOf(t)
	dir, _ := cgroupWith(t, "/sys/fs/cgroup/freezer", "sh", "-c", "exec 3<"+f+"; sleep 60")
	waitOpen(t, dir, f)
	_, err := Freeze(Request{Dir: dir}, Timeout)
	if err == nil || !strings.Contains(err.Error(), f) {
		t.Fatalf("Freeze: %v, want an error naming %s", err, f)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "freezer.state")); strings.TrimSpace(string(b)) != "THAWED" {
		t.Errorf("cgroup %s after the refusal", b)
	}
}

// waitOpen waits until a process of the cgroup holds f open.
func waitOpen(t *testing.T, dir, f string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		file, err := openVolumeFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(file, f) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test process never held %s open", f)
		}
	}
}
