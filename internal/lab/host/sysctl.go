// Package host saves and restores what the lab changes on the host outside
// its own directories (sysctls, /etc/criu/runc.conf, host-wide directories
// that containerd and libcni create), removes what the lab's processes
// leave in the kernel (mounts, veths, routes, nft tables) and takes the
// snapshots that prove the host was left as it was found.
package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KubeletSysctls are the sysctls the kubelet rewrites at start (it does not
// protect kernel defaults) plus the one the lab raises for CRIU.
var KubeletSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "fs.pipe-max-size",
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// ReadSysctl returns a sysctl's value.
func ReadSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	return strings.TrimSpace(string(b)), err
}

// WriteSysctl sets a sysctl.
func WriteSysctl(name, value string) error {
	return os.WriteFile(sysctlPath(name), []byte(value), 0o644)
}

// SaveSysctls records the values of names in file, unless file already
// exists: a second `up` must not record values the first one changed.
func SaveSysctls(file string, names []string) error {
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	vals := map[string]string{}
	for _, n := range names {
		v, err := ReadSysctl(n)
		if err != nil {
			continue
		}
		vals[n] = v
	}
	b, _ := json.MarshalIndent(vals, "", "  ")
	return writeAtomic(file, b, 0o644)
}

// RestoreSysctls writes back the values file holds, then removes it.
func RestoreSysctls(file string) error {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var vals map[string]string
	if err := json.Unmarshal(b, &vals); err != nil {
		return err
	}
	var errs []error
	for n, v := range vals {
		if cur, _ := ReadSysctl(n); cur == v {
			continue
		}
		if err := WriteSysctl(n, v); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", n, v, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.Remove(file)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
