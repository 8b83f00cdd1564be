// Package staging is the hand-off between a node's agent and the ms2m
// runtime handler on the same node: the agent stages a checkpoint for a
// container that does not exist yet (namespace, pod, container), and the
// runtime handler, when the kubelet creates that container, claims it and
// restores the container from it instead of starting it fresh.
//
// A staged checkpoint is claimed once: the claim renames it out of the
// staging tree, so a container the kubelet creates again (a restart, a
// retried create) can never be restored a second time from the same
// images, which would silently take its state back in time.
package staging

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// AnnotationRestore, on a pod, names the checkpoint the pod is restored
// from (for people and tools; the runtime handler goes by EnvRestore).
const AnnotationRestore = "migration.ms2m.io/restore"

// EnvRestore, in the environment of the one container of a target pod that
// is restored, names its checkpoint: every runtime passes the environment
// to the OCI spec, so such a container with nothing staged for it fails to
// be created instead of starting fresh with no state. The pod's other
// containers (init containers, sidecars) lack it and start fresh. The
// restored process keeps its checkpointed environment and never sees it.
const EnvRestore = "MS2M_RESTORE_CHECKPOINT"

// Files of a staged checkpoint, as the kubelet's checkpoint archive names
// them (containerd's and CRI-O's archives share these names).
const (
	MetaFile      = "ms2m-stage.json"
	ImagesDir     = "checkpoint"
	RootfsDiffTar = "rootfs-diff.tar"
	DeletedFiles  = "deleted.files"
	// OthersDir holds, in the archive of a cut of several containers of
	// one pod, one directory per other container, laid out like the
	// archive's root (ImagesDir, RootfsDiffTar).
	OthersDir      = "containers"
	claimedDirName = ".claimed"
	claimedIDsDir  = ".claimed-ids"
	withdrawnDir   = ".withdrawn-ids"
	runningIDsDir  = ".running-ids"
)

// Meta says what a staged checkpoint is for.
type Meta struct {
	// CheckpointID names the checkpoint (the migration's operation ID).
	CheckpointID string    `json:"checkpointID"`
	Namespace    string    `json:"namespace"`
	Pod          string    `json:"pod"`
	Container    string    `json:"container"`
	StagedAt     time.Time `json:"stagedAt"`
	// LazyPages: the checkpoint holds no memory pages; the node's agent
	// runs the lazy-pages daemon that the restore takes them from.
	LazyPages bool `json:"lazyPages,omitempty"`
}

// Key names the container a checkpoint is staged for.
type Key struct {
	Namespace, Pod, Container string
}

func (k Key) String() string { return k.Namespace + "/" + k.Pod + "/" + k.Container }

// DNS-1123 subdomain (pods) and label (namespaces, containers) names: the
// API server allows nothing else, and nothing else may become a path.
var (
	subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	idPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?$`)
)

// Validate refuses a key that is not a Kubernetes name.
func (k Key) Validate() error {
	if !label.MatchString(k.Namespace) || len(k.Namespace) > 63 {
		return fmt.Errorf("namespace %q is not a Kubernetes namespace name", k.Namespace)
	}
	if !subdomain.MatchString(k.Pod) || len(k.Pod) > 253 {
		return fmt.Errorf("pod %q is not a Kubernetes pod name", k.Pod)
	}
	if !label.MatchString(k.Container) || len(k.Container) > 63 {
		return fmt.Errorf("container %q is not a Kubernetes container name", k.Container)
	}
	return nil
}

// Layout is a node's staging tree.
type Layout struct {
	Dir string
}

// Path is where a checkpoint for k is staged.
func (l Layout) Path(k Key) string {
	return filepath.Join(l.Dir, k.Namespace, k.Pod, k.Container)
}

// ClaimedPath is where the claim of the container with runtime ID id moves
// its checkpoint (kept for the restore's logs until the container goes).
func (l Layout) ClaimedPath(containerID string) string {
	return filepath.Join(l.Dir, claimedDirName, containerID)
}

// ErrNotStaged: nothing is staged for the container.
var ErrNotStaged = errors.New("no checkpoint staged")

// Staged reads what is staged for k.
func (l Layout) Staged(k Key) (Meta, error) {
	if err := k.Validate(); err != nil {
		return Meta{}, err
	}
	return readMeta(l.Path(k))
}

func readMeta(dir string) (Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if errors.Is(err, os.ErrNotExist) {
		return Meta{}, ErrNotStaged
	}
	if err != nil {
		return Meta{}, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("staged checkpoint %s: %w", dir, err)
	}
	return m, nil
}

// Claim takes the checkpoint staged for k for the container with runtime
// ID containerID and returns its directory. It succeeds once per staged
// checkpoint: the rename is atomic, so of two creates racing for it one
// gets ErrNotStaged.
func (l Layout) Claim(k Key, containerID string) (string, Meta, error) {
	if err := k.Validate(); err != nil {
		return "", Meta{}, err
	}
	if !idPattern.MatchString(containerID) {
		return "", Meta{}, fmt.Errorf("container ID %q is not a runtime container ID", containerID)
	}
	src := l.Path(k)
	m, err := readMeta(src)
	if err != nil {
		return "", Meta{}, err
	}
	if m.Namespace != k.Namespace || m.Pod != k.Pod || m.Container != k.Container {
		return "", Meta{}, fmt.Errorf("checkpoint staged at %s is for %s/%s/%s", src, m.Namespace, m.Pod, m.Container)
	}
	dst := l.ClaimedPath(containerID)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", Meta{}, err
	}
	if err := os.Rename(src, dst); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", Meta{}, ErrNotStaged
		}
		return "", Meta{}, fmt.Errorf("claiming %s: %w", src, err)
	}
	// Remembered past the container's deletion: a create that waits for
	// this checkpoint to be staged must know it will never come again.
	if idPattern.MatchString(m.CheckpointID) {
		_ = l.record(claimedIDsDir, m.CheckpointID, []byte(k.String()+"\n"))
	}
	return dst, m, nil
}

// WasClaimed says whether a checkpoint was ever claimed on this node.
func (l Layout) WasClaimed(checkpointID string) bool {
	if !idPattern.MatchString(checkpointID) {
		return false
	}
	_, err := os.Stat(filepath.Join(l.Dir, claimedIDsDir, checkpointID))
	return err == nil
}

// ForgetClaimed removes the record that a checkpoint was claimed (its
// migration's cleanup: nothing waits for it any more).
func (l Layout) ForgetClaimed(checkpointID string) error {
	return l.forget(claimedIDsDir, checkpointID)
}

// record writes a checkpoint's record under dir (claimed, running,
// withdrawn), whole then renamed: a reader never sees half a record.
// checkpointID must be a valid ID (idPattern).
func (l Layout) record(dir, checkpointID string, content []byte) error {
	d := filepath.Join(l.Dir, dir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(d, "."+checkpointID+".tmp")
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d, checkpointID))
}

// forget removes a checkpoint's record under dir; none is fine.
func (l Layout) forget(dir, checkpointID string) error {
	if !idPattern.MatchString(checkpointID) {
		return nil
	}
	return os.RemoveAll(filepath.Join(l.Dir, dir, checkpointID))
}

// DropRestored removes a claimed checkpoint's images and file system
// changes once its container runs restored: the running process holds its
// memory now, and a copy on disk would outlive the migration for as long
// as the container lives. The restore's log and the stage's record stay,
// until Release. A lazy restore keeps its images: the lazy-pages daemon
// reads them while pages still come.
func (l Layout) DropRestored(containerID string) error {
	if !idPattern.MatchString(containerID) {
		return nil
	}
	dir := l.ClaimedPath(containerID)
	m, err := readMeta(dir)
	if err != nil || m.LazyPages {
		return err
	}
	var errs []error
	for _, f := range []string{ImagesDir, RootfsDiffTar, DeletedFiles, OthersDir} {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, f)))
	}
	return errors.Join(errs...)
}

// Running is what the runtime handler records once a container restored
// from a checkpoint runs: the node's own word that the restore is done,
// which the kubelet reports only after its next look at the runtime (up
// to a second later).
type Running struct {
	ContainerID string    `json:"containerID"`
	Since       time.Time `json:"since"`
}

// MarkRunning records that the container with runtime ID containerID,
// restored from the checkpoint it claimed, runs.
func (l Layout) MarkRunning(containerID string, since time.Time) error {
	if !idPattern.MatchString(containerID) {
		return fmt.Errorf("container ID %q is not a runtime container ID", containerID)
	}
	m, err := readMeta(l.ClaimedPath(containerID))
	if err != nil {
		return err
	}
	if !idPattern.MatchString(m.CheckpointID) {
		return fmt.Errorf("claimed checkpoint of container %s has no valid ID (%q)", containerID, m.CheckpointID)
	}
	b, err := json.Marshal(Running{ContainerID: containerID, Since: since.UTC()})
	if err != nil {
		return err
	}
	return l.record(runningIDsDir, m.CheckpointID, b)
}

// RunningFrom says whether a container restored from checkpointID runs on
// this node, as the runtime handler recorded it (ok false: not yet, or
// never).
func (l Layout) RunningFrom(checkpointID string) (Running, bool, error) {
	if !idPattern.MatchString(checkpointID) {
		return Running{}, false, fmt.Errorf("%q is not a checkpoint ID", checkpointID)
	}
	b, err := os.ReadFile(filepath.Join(l.Dir, runningIDsDir, checkpointID))
	if errors.Is(err, os.ErrNotExist) {
		return Running{}, false, nil
	}
	if err != nil {
		return Running{}, false, err
	}
	var r Running
	if err := json.Unmarshal(b, &r); err != nil {
		return Running{}, false, fmt.Errorf("running record of checkpoint %s: %w", checkpointID, err)
	}
	return r, true, nil
}

// ForgetRunning removes the record that a restored container ran (its
// migration's cleanup).
func (l Layout) ForgetRunning(checkpointID string) error {
	return l.forget(runningIDsDir, checkpointID)
}

// Withdraw records that a checkpoint will never be staged on this node (its
// migration was given up before): a create that waits for it fails at
// once.
func (l Layout) Withdraw(checkpointID string) error {
	if !idPattern.MatchString(checkpointID) {
		return fmt.Errorf("%q is not a checkpoint ID", checkpointID)
	}
	return l.record(withdrawnDir, checkpointID, nil)
}

// Withdrawn says whether a checkpoint was withdrawn on this node.
func (l Layout) Withdrawn(checkpointID string) bool {
	if !idPattern.MatchString(checkpointID) {
		return false
	}
	_, err := os.Stat(filepath.Join(l.Dir, withdrawnDir, checkpointID))
	return err == nil
}

// ForgetWithdrawn removes the record of a withdrawal (its migration's
// cleanup, once its target is gone).
func (l Layout) ForgetWithdrawn(checkpointID string) error {
	return l.forget(withdrawnDir, checkpointID)
}

// Release removes what a claim left (the container is gone).
func (l Layout) Release(containerID string) error {
	if !idPattern.MatchString(containerID) {
		return nil
	}
	dir := l.ClaimedPath(containerID)
	// A restore killed midway (the runtime's deadline) leaves CRIU's
	// cgroup yard mounted in its work directory; RemoveAll would stop
	// there and leave the checkpoint's files behind.
	mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
	for _, m := range mounts {
		_ = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
	}
	return os.RemoveAll(dir)
}

// Remove removes what is staged for k (a migration that is over or
// rolled back); nothing staged is fine.
func (l Layout) Remove(k Key) error {
	if err := k.Validate(); err != nil {
		return err
	}
	return os.RemoveAll(l.Path(k))
}

// Begin returns a private directory to fill before Commit publishes it.
// It lives inside the staging tree, so the publishing rename is atomic.
func (l Layout) Begin(k Key) (string, error) {
	if err := k.Validate(); err != nil {
		return "", err
	}
	tmp := filepath.Join(l.Dir, ".incoming")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(tmp, k.Namespace+"_"+k.Pod+"_"+k.Container+"-")
}

// Commit writes m into dir and publishes dir as the checkpoint staged for
// k, replacing any older one.
func (l Layout) Commit(k Key, dir string, m Meta) error {
	if err := k.Validate(); err != nil {
		return err
	}
	m.Namespace, m.Pod, m.Container = k.Namespace, k.Pod, k.Container
	if m.StagedAt.IsZero() {
		m.StagedAt = time.Now()
	}
	if _, err := os.Stat(filepath.Join(dir, ImagesDir, "inventory.img")); err != nil {
		return fmt.Errorf("%s holds no CRIU images (no %s/inventory.img)", dir, ImagesDir)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, MetaFile), b, 0o600); err != nil {
		return err
	}
	dst := l.Path(k)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(dir, dst)
}
