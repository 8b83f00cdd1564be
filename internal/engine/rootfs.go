package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/continuity/fs"
	"github.com/moby/sys/mountinfo"
)

// writeRootfsDiff writes what the container changed in its root file system
// as an OCI layer (deletions as whiteouts), read from its overlay's upper
// directory: the same rootfs-diff.tar the runtime's own checkpoint holds,
// which ms2m's runtime handler applies before the restore.
func (r Runc) writeRootfsDiff(st runcState, dst string) error {
	upper, err := r.upperDir(st.Pid)
	if err != nil {
		return err
	}
	return WriteUpperDiff(r.local(upper), r.local(dst))
}

// upperDir finds the upper directory of the overlay mounted as the root of
// the process pid (a host path), from the kernel's mount table.
func (r Runc) upperDir(pid int) (string, error) {
	f, err := os.Open(r.local(filepath.Join("/proc", strconv.Itoa(pid), "mountinfo")))
	if err != nil {
		return "", err
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, func(m *mountinfo.Info) (skip, stop bool) {
		return m.Mountpoint != "/", false
	})
	if err != nil {
		return "", err
	}
	for i := len(mounts) - 1; i >= 0; i-- { // the last mount on / is the visible one
		m := mounts[i]
		if m.FSType != "overlay" {
			return "", fmt.Errorf("the container's root is a %s file system: only overlay roots are dumped by the runc engine", m.FSType)
		}
		for _, o := range strings.Split(m.VFSOptions, ",") {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("the container's overlay root has no upper directory (read-only root)")
	}
	return "", fmt.Errorf("process %d has no root mount", pid)
}

// WriteUpperDiff writes an overlay upper directory as an OCI layer tar.
func WriteUpperDiff(upper, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cw := archive.NewChangeWriter(f, upper)
	err = fs.DiffDirChanges(context.Background(), upper, upper, fs.DiffSourceOverlayFS, cw.HandleChange)
	if cerr := cw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
