package staging

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

func archiveWith(t *testing.T, files map[string]string) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	return &b
}

func stage(t *testing.T, l Layout, k Key, id string) {
	t.Helper()
	dir, err := l.Begin(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := Unpack(context.Background(), archiveWith(t, map[string]string{"checkpoint/inventory.img": "x", "config.dump": "{}"}), dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(k, dir, Meta{CheckpointID: id}); err != nil {
		t.Fatal(err)
	}
}

// A staged checkpoint is claimed once: the second create of the same
// container finds nothing, so it can never be restored twice.
func TestClaimOnce(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	k := Key{Namespace: "shop", Pod: "orders-0", Container: "app"}
	stage(t, l, k, "mig-1")
	m, err := l.Staged(k)
	if err != nil || m.CheckpointID != "mig-1" || m.Pod != "orders-0" {
		t.Fatalf("Staged = %+v, %v", m, err)
	}
	dir, _, err := l.Claim(k, "c0ffee")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ImagesDir, "inventory.img")); err != nil {
		t.Fatalf("claimed checkpoint lacks its images: %v", err)
	}
	if _, _, err := l.Claim(k, "c0ffee2"); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("second claim: %v, want ErrNotStaged", err)
	}
	if err := l.Release("c0ffee"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("release left %s", dir)
	}
}

func TestKeysThatAreNotKubernetesNamesAreRefused(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	for _, k := range []Key{
		{Namespace: "..", Pod: "p", Container: "c"},
		{Namespace: "ns", Pod: "../../etc", Container: "c"},
		{Namespace: "ns", Pod: "p", Container: "a/b"},
		{Namespace: "", Pod: "p", Container: "c"},
	} {
		if _, err := l.Begin(k); err == nil {
			t.Errorf("Begin(%+v) accepted", k)
		}
		if _, _, err := l.Claim(k, "id"); err == nil || errors.Is(err, ErrNotStaged) {
			t.Errorf("Claim(%+v) = %v, want a refusal", k, err)
		}
	}
}

// An archive entry cannot escape the staging directory.
func TestUnpackStaysInside(t *testing.T) {
	dir := t.TempDir()
	inner := filepath.Join(dir, "stage")
	_ = os.Mkdir(inner, 0o700)
	_ = Unpack(context.Background(), archiveWith(t, map[string]string{"../escaped": "x", "checkpoint/inventory.img": "y"}), inner)
	if _, err := os.Stat(filepath.Join(dir, "escaped")); err == nil {
		t.Fatal("an entry named ../escaped was written outside the staging directory")
	}
}

func TestCommitRefusesADirectoryWithoutImages(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	k := Key{Namespace: "ns", Pod: "p", Container: "c"}
	dir, _ := l.Begin(k)
	if err := l.Commit(k, dir, Meta{CheckpointID: "x"}); err == nil {
		t.Fatal("a directory without CRIU images was staged")
	}
}

// A restore killed by the runtime's deadline leaves CRIU's cgroup yard
// mounted in the claimed work directory: the release still removes the
// checkpoint's files (its memory) and the mount.
func TestReleaseUnmountsWhatAKilledRestoreLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	l := Layout{Dir: t.TempDir()}
	k := Key{Namespace: "ns", Pod: "p", Container: "c"}
	stage(t, l, k, "ck-1")
	dir, _, err := l.Claim(k, "cid1")
	if err != nil {
		t.Fatal(err)
	}
	yard := filepath.Join(dir, "work", ".criu.cgyard.test")
	if err := os.MkdirAll(filepath.Join(yard, "pids"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", yard, "tmpfs", 0, ""); err != nil {
		t.Skipf("cannot mount here: %v", err)
	}
	if err := os.Mkdir(filepath.Join(yard, "inner"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", filepath.Join(yard, "inner"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := l.Release("cid1"); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("claimed checkpoint still there: %v", err)
	}
	if m, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(m) != 0 {
		t.Fatalf("mounts left: %v", m)
	}
}

func TestDropRestoredKeepsALazyRestoresImages(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	for i, lazy := range []bool{false, true} {
		k := Key{Namespace: "ns", Pod: fmt.Sprintf("p%d", i), Container: "c"}
		stageImages(t, l, k, Meta{CheckpointID: fmt.Sprintf("id-%d", i), LazyPages: lazy})
		ctr := fmt.Sprintf("ctr%d", i)
		if _, _, err := l.Claim(k, ctr); err != nil {
			t.Fatal(err)
		}
		if err := l.DropRestored(ctr); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(filepath.Join(l.ClaimedPath(ctr), ImagesDir, "inventory.img"))
		if kept := err == nil; kept != lazy {
			t.Errorf("lazy %v: images kept %v after the restore", lazy, kept)
		}
		if !l.WasClaimed(fmt.Sprintf("id-%d", i)) {
			t.Fatal("claim not recorded")
		}
		if err := l.ForgetClaimed(fmt.Sprintf("id-%d", i)); err != nil || l.WasClaimed(fmt.Sprintf("id-%d", i)) {
			t.Fatalf("claim record not forgotten: %v", err)
		}
	}
}

func TestRunningIsRecordedUnderTheClaimedCheckpoint(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	k := Key{Namespace: "ns", Pod: "target", Container: "c"}
	if err := l.MarkRunning("ctr", time.Now()); err == nil {
		t.Fatal("a container that claimed nothing was recorded as running")
	}
	stageImages(t, l, k, Meta{CheckpointID: "ckpt-1"})
	if _, running, err := l.RunningFrom("ckpt-1"); err != nil || running {
		t.Fatalf("staged, not restored: running %v (%v)", running, err)
	}
	if _, _, err := l.Claim(k, "ctr"); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 7, 20, 0, 0, 123456789, time.UTC)
	if err := l.MarkRunning("ctr", since); err != nil {
		t.Fatal(err)
	}
	// The images go once it runs; the record must not go with them.
	if err := l.DropRestored("ctr"); err != nil {
		t.Fatal(err)
	}
	run, running, err := l.RunningFrom("ckpt-1")
	if err != nil || !running || run.ContainerID != "ctr" || !run.Since.Equal(since) {
		t.Fatalf("running %v %+v (%v)", running, run, err)
	}
	if _, _, err := l.RunningFrom("../ckpt-1"); err == nil {
		t.Error("a checkpoint ID that is a path was read")
	}
	if err := l.ForgetRunning("ckpt-1"); err != nil {
		t.Fatal(err)
	}
	if _, running, err := l.RunningFrom("ckpt-1"); err != nil || running {
		t.Fatalf("forgotten, yet running %v (%v)", running, err)
	}
}

// stageImages stages, as the agent does, a checkpoint of one image file
// for k.
func stageImages(t *testing.T, l Layout, k Key, m Meta) {
	t.Helper()
	dir, err := l.Begin(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ImagesDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ImagesDir, "inventory.img"), []byte("i"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(k, dir, m); err != nil {
		t.Fatal(err)
	}
}
