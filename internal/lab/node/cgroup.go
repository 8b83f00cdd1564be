package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CgroupFS is where the cgroup hierarchies are mounted.
var CgroupFS = "/sys/fs/cgroup"

// Hierarchies lists the mounted cgroup hierarchies' directories: one per
// v1 controller set (plus the unified one of a hybrid host), or just the
// root of a pure v2 host.
func Hierarchies() []string {
	if _, err := os.Stat(filepath.Join(CgroupFS, "cgroup.controllers")); err == nil {
		return []string{CgroupFS}
	}
	ents, _ := os.ReadDir(CgroupFS)
	var out []string
	for _, e := range ents {
		p := filepath.Join(CgroupFS, e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// CreateCgroupRoot makes root in every hierarchy: the kubelet wants its
// cgroupRoot to exist in all of them. A v1 cpuset cgroup starts with no CPUs
// and no memory nodes, so it gets its parent's.
func CreateCgroupRoot(root string) error {
	for _, h := range Hierarchies() {
		d := filepath.Join(h, root)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if filepath.Base(h) != "cpuset" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(d, f), err)
			}
		}
	}
	if len(Hierarchies()) == 1 {
		return enableV2Controllers(root)
	}
	return nil
}

func enableV2Controllers(root string) error {
	b, err := os.ReadFile(filepath.Join(CgroupFS, "cgroup.controllers"))
	if err != nil {
		return err
	}
	for _, dir := range []string{CgroupFS, filepath.Join(CgroupFS, root)} {
		for _, c := range strings.Fields(string(b)) {
			_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644)
		}
	}
	return nil
}

// CgroupProcs lists the processes in root's subtree, in any hierarchy.
func CgroupProcs(root string) []int {
	var pids []int
	for _, h := range Hierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, n) {
					pids = append(pids, n)
				}
			}
			return nil
		})
	}
	return pids
}

// RemoveCgroupRoot kills, by PID, whatever still runs in root's subtree and
// removes the subtree in every hierarchy, deepest first.
func RemoveCgroupRoot(root string) error {
	if root == "" || root == "/" {
		return errors.New("refusing to remove the root cgroup")
	}
	for i := 0; i < 20; i++ {
		pids := CgroupProcs(root)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var errs []error
	for _, h := range Hierarchies() {
		top := filepath.Join(h, root)
		if _, err := os.Stat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirRetry(dirs[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry retries EBUSY: a cgroup stays busy for a moment after its last
// task was killed.
func rmdirRetry(d string) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", d, err)
}
