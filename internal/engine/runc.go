package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/staging"
	"github.com/ms2m/ms2m/internal/tarball"
)

// Runc dumps a container with the node's own runc, the binary and state
// root its container runtime uses, so runc's CRIU options (the node's
// /etc/criu/runc.conf) and its view of the container are the runtime's.
// The agent runs in a container with the host's root file system mounted
// at HostRoot and the host's PID namespace; runc runs on the host's files
// (see output), so every path below is the host's.
//
// The container is frozen only while CRIU dumps it (see dump), and runs
// again before the archive is written (the kubelet's API keeps it paused
// for the archive too, and cannot leave it frozen). With Hold it is not
// resumed: CRIU, finding it frozen, leaves it so.
type Runc struct {
	// HostRoot is where the host's root is mounted ("/" on the host).
	HostRoot string
	// Runc is the runc binary; Root its state root for the runtime's
	// containers (containerd: the runc shim's Root plus the namespace,
	// k8s.io); CRIU the criu binary ("": the first on the host's PATH),
	// whose directory goes first on runc's PATH.
	Runc, Root, CRIU string
	// DumpDir is where CRIU writes its images while the source is
	// frozen: memory-backed (tmpfs) keeps the freeze short, since the
	// whole memory is copied there. ArchiveDir is where the archive is
	// written once the source runs again ("": DumpDir); on disk, it does
	// not hold a second copy of the memory in RAM.
	DumpDir, ArchiveDir string
	// FreezeHook: runc's CRIU configuration runs ms2m's freeze hook
	// (FindFreezeHook), so a container is frozen once runc and CRIU have
	// started rather than before.
	FreezeHook bool
}

func (r Runc) archivePath(id string) string {
	dir := r.ArchiveDir
	if dir == "" {
		dir = r.DumpDir
	}
	return filepath.Join(dir, id+".tar")
}

// Name implements Engine.
func (r Runc) Name() agentapi.CheckpointEngine { return agentapi.EngineRunc }

// Check says why the engine cannot work on this node (nil: it can).
func (r Runc) Check() error {
	if _, err := os.Stat(r.local(r.Runc)); err != nil {
		return fmt.Errorf("the runtime's runc is not at %s on the host: %w", r.Runc, err)
	}
	if _, err := os.Stat(r.local(r.Root)); err != nil {
		return fmt.Errorf("runc's state root %s is not on the host (the runtime's runc root and namespace): %w", r.Root, err)
	}
	if r.HostRoot != "" && r.HostRoot != "/" {
		if _, err := FindHostBinary(r.HostRoot, "nsenter"); err != nil {
			return fmt.Errorf("%w (util-linux): runc must run in the runtime's mount namespace", err)
		}
	}
	if r.CRIU != "" {
		if _, err := os.Stat(r.local(r.CRIU)); err != nil {
			return fmt.Errorf("criu is not at %s on the host: %w", r.CRIU, err)
		}
	}
	shared, err := SharesPIDNamespace(r.local("/proc/self/status"))
	if err != nil {
		return err
	}
	if !shared {
		return errors.New("the agent does not share the host's PID namespace (hostPID): CRIU could not reach the containers' processes")
	}
	return nil
}

// SharesPIDNamespace reads the host's procfs entry of the calling process:
// its NSpid line lists one PID per namespace from the host's down to the
// process's own, so a single one means the process is in the host's.
func SharesPIDNamespace(status string) (bool, error) {
	pids, err := statusField(status, "NSpid")
	if err != nil {
		return false, fmt.Errorf("%w (Linux before 4.1?)", err)
	}
	return len(strings.Fields(pids)) == 1, nil
}

// runcState is the part of `runc state`'s JSON used here.
type runcState struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Annotations map[string]string `json:"annotations"`
}

// Checkpoint implements Engine.
func (r Runc) Checkpoint(ctx context.Context, c Container, o Options) (Result, error) {
	if len(o.Others) > 0 && (o.LazyPages || o.PageSink != nil) {
		return Result{}, errors.New("a dump of several containers neither streams its pages nor leaves them to be taken lazily")
	}
	if o.PageSink != nil && o.LazyPages {
		return Result{}, errors.New("a dump either streams its pages or leaves them to be taken lazily, not both")
	}
	dir := filepath.Join(r.DumpDir, o.ID)
	first, err := r.member(ctx, c, dir, "")
	if err != nil {
		return Result{}, err
	}
	members := []member{first}
	for _, other := range o.Others {
		if other.Namespace != c.Namespace || other.Pod != c.Pod || other.PodUID != c.PodUID {
			return Result{}, fmt.Errorf("container %s is not of the pod of %s: one cut holds one pod's containers", other, c)
		}
		m, err := r.member(ctx, other, dir, other.Name)
		if err != nil {
			return Result{}, err
		}
		members = append(members, m)
	}
	if err := os.RemoveAll(r.local(dir)); err != nil {
		return Result{}, err
	}
	for _, m := range members {
		for _, d := range []string{m.images, m.work} {
			if err := os.MkdirAll(r.local(d), 0o700); err != nil {
				return Result{}, err
			}
		}
	}
	// A dump whose pages are served stays until its page server ends.
	served := false
	defer func() {
		if !served {
			_ = os.RemoveAll(r.local(dir))
		}
	}()

	if o.LazyPages && !o.PagesFromDump {
		served = true // removed by checkpointLazy or its CRIU
		return r.checkpointLazy(ctx, c, first.st, o, first.ns, dir)
	}
	d, err := r.dump(ctx, members, o.Hold, o.PageSink)
	if err != nil {
		return Result{}, err
	}
	archive := r.archivePath(o.ID)
	if o.LazyPages {
		served = true // removed by serveDumpPages or its page server
		res, err := r.serveDumpPages(c, dir, archive)
		if err != nil {
			return Result{}, r.failHeld(ctx, members, o, err)
		}
		res.Freeze, res.Held, res.Steps, res.CRIU = d.freeze, o.Hold, d.steps, d.stats
		return res, nil
	}
	if err := writeArchive(r.local(archive), r.local(dir), staging.ImagesDir, staging.RootfsDiffTar, staging.OthersDir); err != nil {
		return Result{}, r.failHeld(ctx, members, o, fmt.Errorf("archiving the dump of %s: %w", c, err))
	}
	return Result{Archive: r.local(archive), Freeze: d.freeze, Held: o.Hold, Steps: d.steps, CRIU: d.stats, Streamed: d.streamed}, nil
}

// member is one container of a dump, checked to be the container named
// and running, with where its images go (host paths under the dump's
// directory): the archive's root for the requested one,
// staging.OthersDir/<name> for the others of its pod.
type member struct {
	c      Container
	st     runcState
	ns     []string
	images string
	work   string
	rootfs string
}

func (r Runc) member(ctx context.Context, c Container, dir, other string) (member, error) {
	if c.ID == "" {
		return member{}, fmt.Errorf("the runc engine needs the container's runtime ID (%s)", c)
	}
	st, err := r.state(ctx, c.ID)
	if err != nil {
		return member{}, err
	}
	if err := CheckIdentity(c, identityFrom(st.Annotations)); err != nil {
		return member{}, err
	}
	if st.Status != "running" {
		return member{}, fmt.Errorf("container %s (%s) is %s, not running", c, c.ID, st.Status)
	}
	ns, err := r.runtimeNamespace(st.Pid)
	if err != nil {
		return member{}, err
	}
	m := member{c: c, st: st, ns: ns, images: filepath.Join(dir, staging.ImagesDir), work: filepath.Join(dir, "work"),
		rootfs: filepath.Join(dir, staging.RootfsDiffTar)}
	if other != "" {
		base := filepath.Join(dir, staging.OthersDir, other)
		m.images, m.work, m.rootfs = filepath.Join(base, staging.ImagesDir), filepath.Join(dir, "work."+other), filepath.Join(base, staging.RootfsDiffTar)
	}
	return m, nil
}

// failHeld thaws the held containers of a checkpoint that failed after
// its dump.
func (r Runc) failHeld(ctx context.Context, members []member, o Options, err error) error {
	if !o.Hold {
		return err
	}
	for _, m := range members {
		if rerr := r.Release(context.WithoutCancel(ctx), m.c.ID); rerr != nil {
			err = errors.Join(err, fmt.Errorf("thawing %s again: %w", m.c, rerr))
		}
	}
	return err
}

// Discard implements Discarder: the dump directory of checkpoint id, kept
// while its pages were served.
func (r Runc) Discard(id string) error {
	if id == "" || id != filepath.Base(id) || strings.HasPrefix(id, ".") {
		return fmt.Errorf("%q is not a checkpoint ID", id)
	}
	return os.RemoveAll(r.local(filepath.Join(r.DumpDir, id)))
}

// Release implements Engine.
func (r Runc) Release(ctx context.Context, containerID string) error {
	st, err := r.state(ctx, containerID)
	if err != nil {
		if errors.Is(err, errNoContainer) {
			return nil
		}
		return err
	}
	if st.Status != "paused" {
		return nil
	}
	ns, err := r.runtimeNamespace(st.Pid)
	if err != nil {
		return err
	}
	return r.run(ctx, ns, "resume", containerID)
}

// Kill implements Engine. SIGKILL goes to the paused container's
// processes first; a frozen task only acts on it when thawed, and then
// before it runs another instruction of its own. runc leaves the cgroup
// frozen (runc 1.5.3), where the processes never finish dying and runc
// keeps calling the container paused: the runtime then waits for an exit
// that never comes, and the pod is stuck terminating on its node. So a
// container still paused after the signal is thawed.
func (r Runc) Kill(ctx context.Context, containerID string) error {
	st, err := r.state(ctx, containerID)
	if errors.Is(err, errNoContainer) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status == "stopped" {
		return nil
	}
	ns, err := r.runtimeNamespace(st.Pid)
	if err != nil {
		if _, serr := os.Stat(r.local(fmt.Sprintf("/proc/%d", st.Pid))); !errors.Is(serr, os.ErrNotExist) {
			return err
		}
		// Its processes are gone already (its runtime killed it), and
		// with them the way to the runtime's mount namespace; what is
		// left, a frozen cgroup, is the host's.
		ns = nil
	}
	// A container whose processes died while it was frozen cannot be
	// signalled any more; the loop below thaws it.
	killErr := r.run(ctx, ns, "kill", containerID, "KILL")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := r.state(ctx, containerID)
		if errors.Is(err, errNoContainer) || (err == nil && st.Status == "stopped") {
			return nil
		}
		if err == nil && st.Status == "running" && killErr != nil {
			return killErr
		}
		if err == nil && st.Status == "paused" {
			if err := r.run(ctx, ns, "resume", containerID); err != nil {
				return fmt.Errorf("thawing killed container %s: %w", containerID, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %s killed but not seen stopped: %w", containerID, ctx.Err())
		case <-tick.C:
		}
	}
}

var errNoContainer = errors.New("no such container")

func (r Runc) state(ctx context.Context, id string) (runcState, error) {
	out, err := r.output(ctx, nil, "state", id)
	if err != nil {
		if _, statErr := os.Stat(r.local(filepath.Join(r.Root, id))); errors.Is(statErr, os.ErrNotExist) {
			return runcState{}, fmt.Errorf("container %s: %w under runc root %s", id, errNoContainer, r.Root)
		}
		return runcState{}, err
	}
	var st runcState
	if err := json.Unmarshal(out, &st); err != nil {
		return runcState{}, fmt.Errorf("runc state %s: %w", id, err)
	}
	return st, nil
}

// hostPath is the PATH runc gets, and where host programs are looked up.
var hostPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// runtimeNamespace is the command prefix that runs a program in the mount
// namespace of the runtime managing the container whose init is pid: the
// namespace of its parent (the runtime's shim), entered with the host's
// nsenter. Whatever CRIU or the cgroup freezer does needs it: CRIU reads
// its mount table, which a chroot does not give. On the host itself the
// agent is already there (nil).
func (r Runc) runtimeNamespace(pid int) ([]string, error) {
	if r.HostRoot == "" || r.HostRoot == "/" {
		return nil, nil
	}
	ppid, err := statusField(r.local(filepath.Join("/proc", strconv.Itoa(pid), "status")), "PPid")
	if err != nil {
		return nil, err
	}
	shim, err := strconv.Atoi(ppid)
	if err != nil {
		return nil, fmt.Errorf("parent of process %d: %w", pid, err)
	}
	nsenter, err := FindHostBinary(r.HostRoot, "nsenter")
	if err != nil {
		return nil, err
	}
	return []string{nsenter, "--mount=/proc/" + strconv.Itoa(shim) + "/ns/mnt", "--"}, nil
}

// run runs runc under the prefix ns (see output).
func (r Runc) run(ctx context.Context, ns []string, args ...string) error {
	_, err := r.output(ctx, ns, args...)
	return err
}

// output runs runc as the node's runtime would: its root, its CRIU, and
// the host's files, chrooted into HostRoot, under the prefix ns (a
// runtimeNamespace; nil to read state, which needs the files alone). What
// runc says on stderr goes into the error, never into anything parsed.
func (r Runc) output(ctx context.Context, ns []string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, ns...), r.Runc, "--root", r.Root), args...)
	cmd := r.hostCommand(ctx, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("runc %s: %w: %s", args[0], err, lastLines(stderr.String(), 6))
	}
	return stdout.Bytes(), nil
}

// FindHostBinary finds a program in the host's hostPath directories, as a
// host path.
func FindHostBinary(hostRoot, name string) (string, error) {
	for _, dir := range hostPath {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(filepath.Join(hostRoot, p)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s on the host", name)
}

// statusField is a field of a procfs status file ("PPid", "NSpid").
func statusField(status, key string) (string, error) {
	b, err := os.ReadFile(status)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(rest), nil
		}
	}
	return "", fmt.Errorf("%s has no %s line", status, key)
}

// lastLines is the end of a command's diagnostics, for an error message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// local is where a host path is in the agent's file system.
func (r Runc) local(p string) string {
	if r.HostRoot == "" {
		return p
	}
	return filepath.Join(r.HostRoot, p)
}

// logTail is the end of a CRIU log, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	return "; CRIU's log ends: " + lastLines(string(b), 5)
}

// writeArchive writes the named entries of dir (files or trees) into a
// tar archive at path.
func writeArchive(path, dir string, names ...string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := tarball.AddTree(tw, dir, n); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// MemoryBacked says whether the dump directory is on tmpfs.
func (r Runc) MemoryBacked() (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(r.local(r.DumpDir), &st); err != nil {
		return false, err
	}
	return st.Type == unix.TMPFS_MAGIC, nil
}
