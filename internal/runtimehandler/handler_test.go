package runtimehandler

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ms2m/ms2m/internal/staging"
)

type recorder struct{ execs [][]string }

func newHandler(t *testing.T) (*Handler, *recorder) {
	rec := &recorder{}
	h := &Handler{Config: Config{Runc: "/usr/bin/runc", StagingDir: t.TempDir()},
		Exec: func(argv []string) error { rec.execs = append(rec.execs, argv); return nil },
		Run:  func(argv []string) (int, error) { rec.execs = append(rec.execs, argv); return 0, nil }}
	return h, rec
}

// bundle writes a config.json as containerd's CRI plugin does for a pod's
// container; one whose pod names a checkpoint is the restored container.
func bundle(t *testing.T, ann map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	_ = os.Mkdir(filepath.Join(dir, "rootfs"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "rootfs", "stale"), []byte("x"), 0o644)
	s := specs.Spec{Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Args: []string{"/app"}}, Annotations: ann}
	if id := ann[AnnotationRestore]; id != "" {
		// ms2m's target pod names the checkpoint in the restored
		// container's environment too (render.TargetPod).
		s.Process.Env = []string{staging.EnvRestore + "=" + id}
	}
	b, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func criAnnotations(ns, pod, ctr string) map[string]string {
	return map[string]string{"io.kubernetes.cri.sandbox-namespace": ns, "io.kubernetes.cri.sandbox-name": pod,
		"io.kubernetes.cri.container-name": ctr, "io.kubernetes.cri.container-type": "container"}
}

func stageFor(t *testing.T, h *Handler, k staging.Key, id string, files map[string]string) {
	t.Helper()
	l := h.layout()
	dir, err := l.Begin(k)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	if err := staging.Unpack(context.Background(), &b, dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(k, dir, staging.Meta{CheckpointID: id}); err != nil {
		t.Fatal(err)
	}
}

func createArgs(b, id string) []string {
	return []string{"--root", "/run/runc", "--log", filepath.Join(b, "log.json"), "--log-format", "json",
		"create", "--bundle", b, "--pid-file", filepath.Join(b, "init.pid"), id}
}

func TestContainersWithNothingStagedGoToRunc(t *testing.T) {
	h, rec := newHandler(t)
	for _, ann := range []map[string]string{
		criAnnotations("ns", "p", "c"),
		{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-namespace": "ns", "io.kubernetes.cri.sandbox-name": "p"},
		nil,
	} {
		b := bundle(t, ann)
		args := createArgs(b, "id1")
		if code := h.Main(args); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if got := rec.execs[len(rec.execs)-1]; !slices.Equal(got, append([]string{"runc"}, args...)) {
			t.Fatalf("exec %q, want runc with the same arguments", got)
		}
	}
}

func TestStagedContainerIsRestoredOnce(t *testing.T) {
	h, rec := newHandler(t)
	k := staging.Key{Namespace: "shop", Pod: "orders-0", Container: "app"}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	_ = tw.WriteHeader(&tar.Header{Name: "written-by-app", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("hi"))
	_ = tw.WriteHeader(&tar.Header{Name: ".wh.stale", Mode: 0o644, Typeflag: tar.TypeReg})
	_ = tw.Close()
	stageFor(t, h, k, "mig-7", map[string]string{"checkpoint/inventory.img": "i", staging.RootfsDiffTar: layer.String()})

	ann := criAnnotations("shop", "orders-0", "app")
	ann[AnnotationRestore] = "mig-7"
	b := bundle(t, ann)
	if code := h.Main(createArgs(b, "ctr1")); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := rec.execs[len(rec.execs)-1]
	if !slices.Contains(got, "restore") || !slices.Contains(got, filepath.Join(h.layout().ClaimedPath("ctr1"), "checkpoint")) {
		t.Fatalf("exec %q, want runc restore from the claimed images", got)
	}
	if b, err := os.ReadFile(filepath.Join(b, "rootfs", "written-by-app")); err != nil || string(b) != "hi" {
		t.Fatalf("the checkpoint's written file is not in the rootfs: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(b, "rootfs", "stale")); !os.IsNotExist(err) {
		t.Fatalf("the file the checkpointed container deleted is back: %v", err)
	}

	// start is a no-op for it (it already runs); delete releases the claim.
	n := len(rec.execs)
	if code := h.Main([]string{"--root", "/run/runc", "start", "ctr1"}); code != 0 || len(rec.execs) != n {
		t.Fatalf("start of a restored container: exit %d, %d runc call(s)", code, len(rec.execs)-n)
	}
	// Its images and file system changes are gone once it runs: the
	// process holds its memory now. The stage's record stays until delete.
	claimed := h.layout().ClaimedPath("ctr1")
	for _, f := range []string{"checkpoint", staging.RootfsDiffTar} {
		if _, err := os.Stat(filepath.Join(claimed, f)); !os.IsNotExist(err) {
			t.Errorf("%s of a running restored container is still on disk (%v)", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(claimed, staging.MetaFile)); err != nil {
		t.Errorf("the claim's record went with the images: %v", err)
	}
	// and the node's agent can say it runs, before the kubelet looks
	if run, running, err := h.layout().RunningFrom("mig-7"); err != nil || !running || run.ContainerID != "ctr1" {
		t.Errorf("restored container not recorded as running: %v %+v (%v)", running, run, err)
	}

	// The same container created again (a restart) is not restored again.
	b2 := bundle(t, ann)
	if code := h.Main(createArgs(b2, "ctr2")); code == 0 {
		t.Fatal("a second create restored the same checkpoint again")
	}
	log, _ := os.ReadFile(filepath.Join(b2, "log.json"))
	var entry map[string]string
	if err := json.Unmarshal(log, &entry); err != nil || entry["level"] != "error" || !strings.Contains(entry["msg"], "never restored again") {
		t.Fatalf("runc log says %q: the shim would not tell the kubelet why", log)
	}

	if code := h.Main([]string{"--root", "/run/runc", "delete", "ctr1"}); code != 0 {
		t.Fatalf("delete: exit %d", code)
	}
	if _, err := os.Stat(h.layout().ClaimedPath("ctr1")); !os.IsNotExist(err) {
		t.Fatal("delete left the claimed checkpoint")
	}
}

func TestWrongCheckpointIsRefused(t *testing.T) {
	h, _ := newHandler(t)
	k := staging.Key{Namespace: "ns", Pod: "p", Container: "c"}
	stageFor(t, h, k, "mig-old", map[string]string{"checkpoint/inventory.img": "i"})
	ann := criAnnotations("ns", "p", "c")
	ann[AnnotationRestore] = "mig-new"
	if code := h.Main(createArgs(bundle(t, ann), "x1")); code == 0 {
		t.Fatal("a container was restored from a checkpoint other than the one its pod names")
	}
	if _, err := h.layout().Staged(k); err != nil {
		t.Fatalf("the refused create consumed the staged checkpoint: %v", err)
	}
}

func TestTerminalIsRefused(t *testing.T) {
	h, _ := newHandler(t)
	k := staging.Key{Namespace: "ns", Pod: "p", Container: "c"}
	stageFor(t, h, k, "m", map[string]string{"checkpoint/inventory.img": "i"})
	b := bundle(t, criAnnotations("ns", "p", "c"))
	s := specs.Spec{Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Terminal: true}, Annotations: criAnnotations("ns", "p", "c")}
	raw, _ := json.Marshal(s)
	_ = os.WriteFile(filepath.Join(b, "config.json"), raw, 0o644)
	if code := h.Main(createArgs(b, "t1")); code == 0 {
		t.Fatal("a terminal container was restored")
	}
}

// A warm target's container is created before its checkpoint exists: the
// create waits for the agent to stage it, then restores.
func TestWarmTargetWaitsForItsCheckpoint(t *testing.T) {
	h, rec := newHandler(t)
	k := staging.Key{Namespace: "shop", Pod: "orders-0-shadow", Container: "app"}
	ann := criAnnotations("shop", "orders-0-shadow", "app")
	ann[AnnotationRestore] = "mig-8"
	b := bundle(t, ann)
	done := make(chan int, 1)
	go func() { done <- h.Main(createArgs(b, "warm1")) }()
	time.Sleep(100 * time.Millisecond)
	select {
	case code := <-done:
		t.Fatalf("create returned %d before the checkpoint was staged", code)
	default:
	}
	stageFor(t, h, k, "mig-8", map[string]string{"checkpoint/inventory.img": "i"})
	select {
	case code := <-done:
		if code != 0 || !slices.Contains(rec.execs[len(rec.execs)-1], "restore") {
			t.Fatalf("exit %d, exec %q", code, rec.execs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("create did not restore once the checkpoint was staged")
	}
}

func TestWarmTargetGivesUp(t *testing.T) {
	h, _ := newHandler(t)
	h.Config.StageWaitSeconds = 1
	ann := criAnnotations("shop", "late", "app")
	ann[AnnotationRestore] = "mig-late"
	b := bundle(t, ann)
	if code := h.Main(createArgs(b, "late1")); code == 0 {
		t.Fatal("a container was created with nothing staged for it")
	}
	log, _ := os.ReadFile(filepath.Join(b, "log.json"))
	if !strings.Contains(string(log), "within 1s") {
		t.Fatalf("log %q does not say how long it waited", log)
	}
}

// A warm target whose migration was given up before its checkpoint was
// staged fails as soon as the node's agent withdraws it, not after the
// handler's patience: the kubelet deletes its pod only once the create
// has failed.
func TestWarmTargetOfAWithdrawnCheckpointFailsAtOnce(t *testing.T) {
	h, rec := newHandler(t)
	ann := criAnnotations("shop", "orders-0-shadow", "app")
	ann[AnnotationRestore] = "mig-9"
	b := bundle(t, ann)
	done := make(chan int, 1)
	go func() { done <- h.Main(createArgs(b, "warm9")) }()
	time.Sleep(100 * time.Millisecond)
	if err := h.layout().Withdraw("mig-10"); err != nil { // another migration's
		t.Fatal(err)
	}
	select {
	case code := <-done:
		t.Fatalf("create returned %d when another checkpoint was withdrawn", code)
	case <-time.After(200 * time.Millisecond):
	}
	if err := h.layout().Withdraw("mig-9"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code == 0 {
			t.Fatalf("a container was created from a withdrawn checkpoint: %q", rec.execs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("create still waits for a withdrawn checkpoint")
	}
	log, _ := os.ReadFile(filepath.Join(b, "log.json"))
	if !strings.Contains(string(log), "given up before checkpoint mig-9 was staged") {
		t.Fatalf("log %q does not say why", log)
	}
	if err := h.layout().ForgetWithdrawn("mig-9"); err != nil || h.layout().Withdrawn("mig-9") {
		t.Fatalf("withdrawal not forgotten: %v", err)
	}
}

// A runtime that does not pass the pod's annotation through still tells
// the handler, through the container's environment, that the container
// must be restored: it never starts fresh.
func TestRestoreMarkerInTheEnvironment(t *testing.T) {
	h, _ := newHandler(t)
	h.Config.StageWaitSeconds = 1
	b := bundle(t, criAnnotations("shop", "orders-0-shadow", "app"))
	s := specs.Spec{Root: &specs.Root{Path: "rootfs"}, Annotations: criAnnotations("shop", "orders-0-shadow", "app"),
		Process: &specs.Process{Args: []string{"/app"}, Env: []string{"PATH=/bin", staging.EnvRestore + "=mig-9"}}}
	raw, _ := json.Marshal(s)
	_ = os.WriteFile(filepath.Join(b, "config.json"), raw, 0o644)
	if code := h.Main(createArgs(b, "env1")); code == 0 {
		t.Fatal("a container marked for restore started fresh with nothing staged")
	}
}

// The other containers of a restored pod (init containers, sidecars) see
// the pod's annotation but not the checkpoint in their environment: they
// start fresh at once, as on any node, and do not wait for a checkpoint
// that is not theirs.
func TestOtherContainersOfARestoredPodStartFresh(t *testing.T) {
	h, rec := newHandler(t)
	h.Config.StageWaitSeconds = 30
	for _, ctr := range []string{"init-config", "log-shipper"} {
		ann := criAnnotations("shop", "orders-0-shadow", ctr)
		ann[AnnotationRestore] = "mig-11"
		b := t.TempDir()
		_ = os.Mkdir(filepath.Join(b, "rootfs"), 0o755)
		raw, _ := json.Marshal(specs.Spec{Root: &specs.Root{Path: "rootfs"}, Annotations: ann, Process: &specs.Process{Args: []string{"/bin/sh"}}})
		_ = os.WriteFile(filepath.Join(b, "config.json"), raw, 0o644)
		start := time.Now()
		if code := h.Main(createArgs(b, ctr)); code != 0 {
			t.Fatalf("%s: exit %d", ctr, code)
		}
		last := rec.execs[len(rec.execs)-1]
		if slices.Contains(last, "restore") || !slices.Contains(last, "create") || time.Since(start) > 10*time.Second {
			t.Fatalf("%s: exec %q after %s", ctr, last, time.Since(start))
		}
	}
}

// A failed restore says why in the runc log the shim reads: runc's own
// error, which names no cause, and CRIU's error lines from the restore log
// in the claimed directory, which goes with the target pod.
func TestFailedRestoreSaysCRIUsReason(t *testing.T) {
	h, _ := newHandler(t)
	k := staging.Key{Namespace: "shop", Pod: "orders-0", Container: "app"}
	stageFor(t, h, k, "mig-9", map[string]string{"checkpoint/inventory.img": "i"})
	ann := criAnnotations("shop", "orders-0", "app")
	ann[AnnotationRestore] = "mig-9"
	b := bundle(t, ann)
	logPath := filepath.Join(b, "log.json")
	h.Run = func(argv []string) (int, error) {
		// as runc does: CRIU's log in the work directory, its own error last in --log
		work := argv[slices.Index(argv, "--work-path")+1]
		_ = os.MkdirAll(work, 0o755)
		_ = os.WriteFile(filepath.Join(work, "restore.log"), []byte(
			"(00.001000) Restoring file 4\n"+
				"(00.002000)      1: Error (criu/files-reg.c:2104): Can't open file var/journal on restore: No such file or directory\n"+
				"(00.002100) Error (criu/cr-restore.c:1512): 12 exited, status=1\n"+
				"(00.003000) Restore finished\n"), 0o644)
		_ = os.WriteFile(logPath, []byte(`{"level":"warning","msg":"x"}`+"\n"+`{"level":"error","msg":"criu failed: type RESTORE errno 0"}`+"\n"), 0o644)
		return 1, nil
	}
	if code := h.Main(createArgs(b, "ctr1")); code == 0 {
		t.Fatal("a failed restore exited 0")
	}
	log, _ := os.ReadFile(logPath)
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	var entry map[string]string
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &entry); err != nil || entry["level"] != "error" {
		t.Fatalf("last runc log line %q is not an error", lines[len(lines)-1])
	}
	for _, want := range []string{"runc exited 1", "criu failed: type RESTORE errno 0", "Can't open file var/journal", "12 exited, status=1"} {
		if !strings.Contains(entry["msg"], want) {
			t.Errorf("the shim would tell the kubelet %q, without %q", entry["msg"], want)
		}
	}
	if strings.Contains(entry["msg"], "Restore finished") || strings.Contains(entry["msg"], "(00.") || strings.Contains(entry["msg"], "1: Error") {
		t.Errorf("%q carries more than CRIU's error lines", entry["msg"])
	}
}

func TestJoinWithinKeepsTheFirstLines(t *testing.T) {
	lines := []string{"first cause", strings.Repeat("x", 30), "third"}
	if got := joinWithin(lines, " | ", 20); got != "first cause | (2 more)" {
		t.Errorf("got %q", got)
	}
	if got := joinWithin(lines[:1], " | ", 5); got != "first cause" {
		t.Errorf("a first line over the budget: got %q", got)
	}
}
