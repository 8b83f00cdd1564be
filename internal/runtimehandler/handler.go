// Package runtimehandler is ms2m's OCI runtime handler: a runc wrapper the
// node's container runtime runs as a runtime handler (containerd:
// BinaryName of a runc-type handler selected by a RuntimeClass; CRI-O:
// runtime_path of a runtime). Every call goes to runc unchanged, except the
// creation of a container for which the node's agent has staged a
// checkpoint (internal/staging): that container is restored from the
// checkpoint instead, with runc and CRIU, inside the sandbox the kubelet
// made for it.
//
// This is how a cluster restores a checkpoint where the runtime itself no
// longer does (containerd 2.4 removed restore through CreateContainer;
// 2.2.7 and 2.3.4 ship it off), the same way on every containerd and CRI-O.
package runtimehandler

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ms2m/ms2m/internal/staging"
)

// AnnotationRestore is the pod annotation naming the checkpoint to restore.
const AnnotationRestore = staging.AnnotationRestore

// Annotations the runtimes put on every container's OCI spec.
var (
	// containerd's CRI plugin
	criKeys = [4]string{"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name",
		"io.kubernetes.cri.container-name", "io.kubernetes.cri.container-type"}
	// CRI-O
	crioKeys = [4]string{"io.kubernetes.pod.namespace", "io.kubernetes.pod.name",
		"io.kubernetes.container.name", "io.kubernetes.cri-o.ContainerType"}
)

// Config of the handler, read from a JSON file (see ConfigPath).
type Config struct {
	// Runc is the runc binary every call is handed to.
	Runc string `json:"runc"`
	// StagingDir is the node's staging tree, shared with its agent.
	StagingDir string `json:"stagingDir"`
	// StageWaitSeconds is how long the create of a container that names a
	// checkpoint waits for it to be staged: a target pod created while its
	// source is still being checkpointed (a warm target) has its sandbox,
	// network and image ready by then. Default 100.
	StageWaitSeconds int `json:"stageWaitSeconds,omitempty"`
}

// ConfigPath is $MS2M_RUNTIME_CONFIG, else the file beside the program
// named like it with ".json" (one per lab node), else
// /etc/ms2m/runtime.json.
func ConfigPath(argv0 string) string {
	if p := os.Getenv("MS2M_RUNTIME_CONFIG"); p != "" {
		return p
	}
	if argv0 != "" && filepath.IsAbs(argv0) {
		if p := argv0 + ".json"; fileExists(p) {
			return p
		}
	}
	return "/etc/ms2m/runtime.json"
}

// LoadConfig reads the configuration; a missing file gives the defaults.
func LoadConfig(path string) (Config, error) {
	c := Config{Runc: "runc", StagingDir: "/var/lib/ms2m/staging"}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Handler decides what one invocation does.
type Handler struct {
	Config Config
	// Exec replaces the process with runc (syscall.Exec); tests run it as a
	// child instead.
	Exec func(argv []string) error
	// Run runs runc as a child with our stdio and returns its exit code.
	Run func(argv []string) (int, error)
	Now func() time.Time
}

// New is a handler that execs the configured runc.
func New(c Config) (*Handler, error) {
	runc, err := exec.LookPath(c.Runc)
	if err != nil {
		return nil, fmt.Errorf("runc %q: %w", c.Runc, err)
	}
	c.Runc = runc
	return &Handler{Config: c, Now: time.Now,
		Exec: func(argv []string) error { return syscall.Exec(runc, argv, os.Environ()) },
		Run: func(argv []string) (int, error) {
			cmd := exec.Command(runc, argv[1:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), nil
			}
			if err != nil {
				return 1, err
			}
			return 0, nil
		}}, nil
}

func (h *Handler) layout() staging.Layout { return staging.Layout{Dir: h.Config.StagingDir} }

// Main handles one command line (without the program name) and returns
// the exit code; it only returns when it did not exec runc.
func (h *Handler) Main(args []string) int {
	inv, err := Parse(args)
	if err != nil {
		return h.passThrough(args)
	}
	switch inv.Command {
	case "create":
		return h.create(inv, args)
	case "start":
		return h.start(inv, args)
	case "delete":
		return h.delete(inv, args)
	}
	return h.passThrough(args)
}

func (h *Handler) passThrough(args []string) int {
	if err := h.Exec(append([]string{"runc"}, args...)); err != nil {
		fmt.Fprintf(os.Stderr, "ms2m-runtime: exec runc: %v\n", err)
		return 1
	}
	return 0
}

// create restores the container when a checkpoint is staged for it.
func (h *Handler) create(inv Invocation, args []string) int {
	spec, err := readSpec(inv.Bundle)
	if err != nil {
		// Not ours to judge: runc says what is wrong with the bundle.
		return h.passThrough(args)
	}
	key, isContainer := containerKey(spec.Annotations)
	if !isContainer {
		return h.passThrough(args)
	}
	// The container to restore carries the checkpoint's ID in its
	// environment, which every runtime passes on. The pod's annotation
	// names it for every container of the pod, init containers and
	// sidecars included: those start fresh, as on any node.
	want := ""
	if spec.Process != nil {
		for _, e := range spec.Process.Env {
			if v, ok := strings.CutPrefix(e, staging.EnvRestore+"="); ok {
				want = v
			}
		}
	}
	meta, err := h.layout().Staged(key)
	if errors.Is(err, staging.ErrNotStaged) && want == "" {
		return h.passThrough(args)
	}
	if errors.Is(err, staging.ErrNotStaged) && !h.layout().WasClaimed(want) {
		meta, err = h.waitStaged(key, want)
	}
	if err != nil {
		return h.fail(inv, notStaged(key, want, err))
	}
	if want != "" && meta.CheckpointID != want {
		return h.fail(inv, fmt.Errorf("container %s must be restored from checkpoint %s, but checkpoint %s is staged for it", key, want, meta.CheckpointID))
	}
	if spec.Process != nil && spec.Process.Terminal {
		return h.fail(inv, fmt.Errorf("container %s has a terminal (tty: true): ms2m does not restore terminals", key))
	}
	if inv.PreserveFDs != "" && inv.PreserveFDs != "0" {
		return h.fail(inv, fmt.Errorf("container %s: restore with --preserve-fds is not supported", key))
	}
	dir, _, err := h.layout().Claim(key, inv.ID)
	if err != nil {
		return h.fail(inv, notStaged(key, want, err))
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(inv.Bundle, rootfs)
	}
	if err := ApplyRootfsChanges(rootfs, dir); err != nil {
		return h.fail(inv, fmt.Errorf("container %s: applying the checkpoint's file system changes: %w", key, err))
	}
	// Run as a child, not exec'd: a failed restore's reason is in CRIU's
	// log in the claimed directory, which runc's own error ("criu failed:
	// type RESTORE errno 0") does not give and which goes with the target
	// pod; said here, it reaches the kubelet and the migration's status.
	code, err := h.Run(append([]string{"runc"}, restoreArgs(inv, dir, meta.LazyPages)...))
	if err != nil {
		return h.fail(inv, fmt.Errorf("running runc restore: %w", err))
	}
	if code != 0 {
		return h.fail(inv, restoreFailed(inv, dir, code))
	}
	return 0
}

// criuErrorBudget bounds how much of CRIU's log a failed restore says.
const criuErrorBudget = 800

// restoreFailed says why runc restore failed: runc's last error and the
// error lines of CRIU's restore log, first cause first.
func restoreFailed(inv Invocation, dir string, code int) error {
	msg := fmt.Sprintf("container restore failed (runc exited %d", code)
	if e := lastRuncError(inv.Log); e != "" {
		msg += ": " + e
	}
	msg += ")"
	if lines := criuErrors(filepath.Join(dir, "work", "restore.log")); len(lines) > 0 {
		msg += "; CRIU: " + joinWithin(lines, " | ", criuErrorBudget)
	}
	return errors.New(msg)
}

// lastRuncError is the message of the last error runc wrote to its log
// (JSON lines or logfmt; only the message is kept).
func lastRuncError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	last := ""
	for _, line := range strings.Split(string(b), "\n") {
		var entry struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &entry) == nil {
			if entry.Level == "error" {
				last = entry.Msg
			}
			continue
		}
		if _, m, ok := strings.Cut(line, "level=error msg="); ok {
			if u, err := strconv.Unquote(m); err == nil {
				m = u
			}
			last = m
		}
	}
	return last
}

// criuErrors is the lines of a CRIU log that report an error
// ("Error (criu/files-reg.c:2104): ..."), without the timestamp or the
// task's PID, in order: the first failure is the cause, the ones after it
// mostly its consequences (and CRIU logs some it goes on from).
func criuErrors(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n") {
		// "(00.012345) Error (criu/...", or "(00.012345)      1: Error
		// (criu/..." from a restored task
		if _, rest, ok := strings.Cut(line, " Error (criu/"); ok {
			found = append(found, "Error (criu/"+strings.TrimSpace(rest))
		}
	}
	return found
}

// joinWithin joins the first of lines that fit within budget bytes, and
// says how many more there were.
func joinWithin(lines []string, sep string, budget int) string {
	var b strings.Builder
	for i, l := range lines {
		if i > 0 && b.Len()+len(sep)+len(l) > budget {
			fmt.Fprintf(&b, "%s(%d more)", sep, len(lines)-i)
			break
		}
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(l)
	}
	return b.String()
}

// waitStaged waits for the node's agent to stage the checkpoint of a warm
// target, which the controller creates before the checkpoint exists, and
// gives up at once if its migration did.
func (h *Handler) waitStaged(key staging.Key, want string) (staging.Meta, error) {
	wait := time.Duration(h.Config.StageWaitSeconds) * time.Second
	if wait <= 0 {
		wait = 100 * time.Second
	}
	deadline := h.now().Add(wait)
	for {
		meta, err := h.layout().Staged(key)
		if !errors.Is(err, staging.ErrNotStaged) {
			return meta, err
		}
		if want != "" && h.layout().Withdrawn(want) {
			return meta, fmt.Errorf("%w: its migration was given up before checkpoint %s was staged", err, want)
		}
		if h.now().After(deadline) {
			return meta, fmt.Errorf("%w within %s", err, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func notStaged(key staging.Key, want string, err error) error {
	if errors.Is(err, staging.ErrNotStaged) {
		return fmt.Errorf("container %s must be restored from checkpoint %s, but none is staged for it on this node "+
			"(%v: never staged, or already restored once: a restored container is never restored again from the same checkpoint)", key, want, err)
	}
	return fmt.Errorf("container %s: %w", key, err)
}

// restoreArgs restore the container as containerd's shim would have:
// detached, with the bundle's namespaces and mounts, our stdio (the shim's
// pipes) in place of the checkpointed ones, and no subreaper of its own
// (the shim reaps).
//
// A lazy checkpoint (post-copy) is restored with --lazy-pages: CRIU takes
// the memory from the lazy-pages daemon the node's agent started on the
// same work directory, page by page as the process touches it.
func restoreArgs(inv Invocation, dir string, lazy bool) []string {
	a := append([]string{}, inv.Globals...)
	a = append(a, "restore", "--detach", "--no-subreaper",
		"--bundle", inv.Bundle,
		"--image-path", filepath.Join(dir, staging.ImagesDir),
		"--work-path", filepath.Join(dir, "work"))
	if lazy {
		a = append(a, "--lazy-pages")
	}
	if inv.PidFile != "" {
		a = append(a, "--pid-file", inv.PidFile)
	}
	if inv.NoPivot {
		a = append(a, "--no-pivot")
	}
	return append(a, inv.ID)
}

// start of a restored container is a no-op: it has been running since its
// create. runc itself would refuse to start it again. Its checkpoint's
// images go now (see staging.Layout.DropRestored), and the node's agent
// is told it runs (staging.Layout.MarkRunning), so the migration goes on
// without waiting for the kubelet's next look at the runtime.
func (h *Handler) start(inv Invocation, args []string) int {
	if inv.ID != "" && fileExists(h.layout().ClaimedPath(inv.ID)) {
		if err := h.layout().MarkRunning(inv.ID, h.now()); err != nil {
			fmt.Fprintf(os.Stderr, "ms2m-runtime: not recorded as running (the migration waits for the kubelet instead): %v\n", err)
		}
		if err := h.layout().DropRestored(inv.ID); err != nil {
			fmt.Fprintf(os.Stderr, "ms2m-runtime: the restored checkpoint stays on disk: %v\n", err)
		}
		return 0
	}
	return h.passThrough(args)
}

// delete also removes what the container's restore left.
func (h *Handler) delete(inv Invocation, args []string) int {
	if inv.ID == "" || !fileExists(h.layout().ClaimedPath(inv.ID)) {
		return h.passThrough(args)
	}
	code, err := h.Run(append([]string{"runc"}, args...))
	if err != nil {
		fmt.Fprintf(os.Stderr, "ms2m-runtime: runc delete: %v\n", err)
		return 1
	}
	if code == 0 {
		if err := h.layout().Release(inv.ID); err != nil {
			fmt.Fprintf(os.Stderr, "ms2m-runtime: %v\n", err)
		}
	}
	return code
}

// fail reports err the way runc reports its own errors: on stderr and as
// the last line of its log, which the shim reads to tell the kubelet why
// the container could not be created.
func (h *Handler) fail(inv Invocation, err error) int {
	msg := "ms2m-runtime: " + err.Error()
	fmt.Fprintln(os.Stderr, msg)
	if inv.Log != "" {
		if f, ferr := os.OpenFile(inv.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); ferr == nil {
			if inv.LogFormat == "json" {
				b, _ := json.Marshal(map[string]string{"level": "error", "msg": msg, "time": h.now().Format(time.RFC3339Nano)})
				_, _ = f.Write(append(b, '\n'))
			} else {
				fmt.Fprintf(f, "time=%q level=error msg=%q\n", h.now().Format(time.RFC3339Nano), msg)
			}
			_ = f.Close()
		}
	}
	return 1
}

func (h *Handler) now() time.Time {
	if h.Now == nil {
		return time.Now()
	}
	return h.Now()
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.Root == nil {
		return nil, errors.New("no root in config.json")
	}
	return &s, nil
}

// containerKey names the pod container a spec is for; false for sandboxes
// (pause containers) and for specs no Kubernetes runtime made.
func containerKey(ann map[string]string) (staging.Key, bool) {
	for _, keys := range [][4]string{criKeys, crioKeys} {
		if ann[keys[3]] != "container" {
			continue
		}
		k := staging.Key{Namespace: ann[keys[0]], Pod: ann[keys[1]], Container: ann[keys[2]]}
		return k, k.Namespace != "" && k.Pod != "" && k.Container != ""
	}
	return staging.Key{}, false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
