// Package criuhook takes runc's and CRIU's start-up out of a container's
// freeze.
//
// The agent dumps a ShadowPod source with `runc checkpoint --leave-running`,
// and the container must stay frozen from CRIU's dump until its root file
// system's changes are written. Pausing it before runc starts puts runc's
// and CRIU's start-up (60-90 ms on the lab) inside the freeze; letting CRIU
// freeze it costs more, since CRIU polls the cgroup freezer in 100 ms
// steps (criu/seize.c) and a container seldom freezes before its first
// look.
//
// CRIU runs the action scripts of runc's CRIU configuration
// (/etc/criu/runc.conf: `action-script PATH`) at "pre-dump", once it has
// started and right before it seizes the container. Installed there, the
// hook freezes the container the agent asked for, in 1 ms steps, and
// records when it was frozen; CRIU then finds it frozen, dumps it and
// leaves it frozen, and the agent resumes it once its files are written.
// The hook does nothing for a dump the agent did not ask it to freeze
// (the kubelet's, another tool's), nor for any other action.
package criuhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

const (
	// RequestFile, in the dump's images directory, asks the hook to
	// freeze a container (Request). The agent removes it after the dump.
	RequestFile = ".ms2m-freeze"
	// FrozenFile, in the same directory, is the hook's answer: when the
	// container was frozen (RFC 3339, nanoseconds).
	FrozenFile = ".ms2m-frozen"
	// Marker is in every hook script: the agent recognises its hook by it.
	Marker = "ms2m-criu-hook"
	// EnvAction and EnvImageDir are what CRIU tells an action script.
	EnvAction   = "CRTOOLS_SCRIPT_ACTION"
	EnvImageDir = "CRTOOLS_IMAGE_DIR"
	// cgroupRoot: the hook freezes nothing outside it.
	cgroupRoot = "/sys/fs/cgroup/"
)

// Script is the action script to install on a node and name in runc's
// CRIU configuration: a shell script, so that the actions of every other
// dump and restore cost a shell's start, not a Go program's; it runs
// binary (ms2m-runtime) only for a dump the agent asked it to freeze.
func Script(binary string) string {
	return fmt.Sprintf(`#!/bin/sh
# %s: freezes, at CRIU's pre-dump, a container that ms2m's agent is
# dumping, so that runc's and CRIU's start-up is not part of its freeze.
# Does nothing for any other dump or action.
[ "$%s" = pre-dump ] || exit 0
[ -e "$%s/%s" ] || exit 0
exec %s
`, Marker, EnvAction, EnvImageDir, RequestFile, binary)
}

// Request names the cgroup to freeze: its directory on the host, and
// whether it is a cgroup v2 one (cgroup.freeze) or a v1 freezer
// (freezer.state).
type Request struct {
	Dir string `json:"dir"`
	V2  bool   `json:"v2"`
}

func (q Request) validate() error {
	if !filepath.IsAbs(q.Dir) || filepath.Clean(q.Dir) != q.Dir || !strings.HasPrefix(q.Dir, cgroupRoot) {
		return fmt.Errorf("%q is not a cgroup directory under %s", q.Dir, cgroupRoot)
	}
	return nil
}

// Ask writes the request into the images directory of a dump about to
// start (imagesDir as this process sees it).
func Ask(imagesDir string, q Request) error {
	if err := q.validate(); err != nil {
		return err
	}
	b, err := json.Marshal(q)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(imagesDir, RequestFile), b, 0o600)
}

// FrozenAt reads the hook's answer: ok false if it froze nothing.
func FrozenAt(imagesDir string) (at time.Time, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(imagesDir, FrozenFile))
	if errors.Is(err, os.ErrNotExist) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	at, err = time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	return at, err == nil, err
}

// Clear removes the request and the answer: they are not CRIU's images,
// and do not travel with them.
func Clear(imagesDir string) error {
	var errs []error
	for _, f := range []string{RequestFile, FrozenFile} {
		if err := os.Remove(filepath.Join(imagesDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Timeout bounds the wait for a cgroup to freeze; CRIU's own default is
// 10 s.
const Timeout = 10 * time.Second

// Main is the hook, run by the script with CRIU's environment: it returns
// the exit code CRIU reads (non-zero fails the dump). What it says goes
// to CRIU's log.
func Main(getenv func(string) string, stderr io.Writer) int {
	if getenv(EnvAction) != "pre-dump" {
		return 0
	}
	dir := getenv(EnvImageDir)
	b, err := os.ReadFile(filepath.Join(dir, RequestFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err == nil {
		var q Request
		if err = json.Unmarshal(b, &q); err == nil {
			var at time.Time
			if at, err = Freeze(q, Timeout); err == nil {
				err = os.WriteFile(filepath.Join(dir, FrozenFile), []byte(at.Format(time.RFC3339Nano)), 0o600)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", Marker, err)
		return 1
	}
	return 0
}

// volumeFile matches the path of a file the kubelet writes with its
// atomic writer (downward API, projected, ConfigMap and Secret volumes):
// it lies in a timestamped directory (..2026_12_08_00_29_30.3928708634)
// that the same volume of the target pod names differently. CRIU dumps
// an open file by its path, so a process frozen while it reads one cannot
// be restored ("Can't open file etc/podinfo/..2026_.../name on restore").
var volumeFile = regexp.MustCompile(`/\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+/`)

// volumeSettle bounds how long Freeze tries to catch the container
// between two reads of such a file (an SDK reads its pod's identity files
// every 150 ms, each read open for microseconds).
const volumeSettle = 500 * time.Millisecond

// Freeze freezes the cgroup and returns once the kernel reports it
// frozen, with the time it did, at a moment when none of its processes
// has a file of a kubelet atomic-writer volume open: caught reading one,
// it is thawed and frozen again, for up to volumeSettle; a process that
// keeps one open fails the freeze, thawed, naming the file. A cgroup that
// will not freeze within timeout is thawed again and an error returned.
func Freeze(q Request, timeout time.Duration) (time.Time, error) {
	if err := q.validate(); err != nil {
		return time.Time{}, err
	}
	settle := time.Now().Add(volumeSettle)
	for {
		at, err := freezeOnce(q, timeout)
		if err != nil {
			return at, err
		}
		file, err := openVolumeFile(q.Dir)
		if err == nil && file == "" {
			return at, nil
		}
		if err == nil && time.Now().Before(settle) {
			err = q.thaw()
			time.Sleep(time.Millisecond)
			if err == nil {
				continue
			}
		}
		if err == nil {
			err = fmt.Errorf("%s keeps open %s, a file of a kubelet-managed volume whose directory the target's volume names differently: CRIU could not restore it", q.Dir, file)
		}
		return time.Time{}, errors.Join(err, q.thaw())
	}
}

func (q Request) thaw() error {
	control, thaw := "freezer.state", "THAWED"
	if q.V2 {
		control, thaw = "cgroup.freeze", "0"
	}
	return os.WriteFile(filepath.Join(q.Dir, control), []byte(thaw), 0)
}

// openVolumeFile names a file of a kubelet atomic-writer volume that a
// process of the cgroup has open ("" if none).
func openVolumeFile(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return "", fmt.Errorf("listing the processes of %s: %w", dir, err)
	}
	for _, pid := range strings.Fields(string(b)) {
		fds := filepath.Join("/proc", pid, "fd")
		entries, err := os.ReadDir(fds)
		if err != nil {
			continue // gone
		}
		for _, e := range entries {
			if link, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && volumeFile.MatchString(link) {
				return fmt.Sprintf("%s (process %s, fd %s)", link, pid, e.Name()), nil
			}
		}
	}
	return "", nil
}

// freezeOnce freezes the cgroup and waits until the kernel reports it
// frozen.
func freezeOnce(q Request, timeout time.Duration) (time.Time, error) {
	control, freeze, state, frozen := "freezer.state", "FROZEN", "freezer.state", func(s string) bool { return strings.TrimSpace(s) == "FROZEN" }
	if q.V2 {
		control, freeze, state, frozen = "cgroup.freeze", "1", "cgroup.events", func(s string) bool {
			for _, l := range strings.Split(s, "\n") {
				if l == "frozen 1" {
					return true
				}
			}
			return false
		}
	}
	write := func(v string) error { return os.WriteFile(filepath.Join(q.Dir, control), []byte(v), 0) }
	if err := write(freeze); err != nil {
		return time.Time{}, fmt.Errorf("freezing %s: %w", q.Dir, err)
	}
	deadline := time.Now().Add(timeout)
	for i := 1; ; i++ {
		b, err := os.ReadFile(filepath.Join(q.Dir, state))
		if err != nil {
			return time.Time{}, fmt.Errorf("reading %s of %s: %w", state, q.Dir, err)
		}
		if frozen(string(b)) {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, errors.Join(fmt.Errorf("%s did not freeze within %s", q.Dir, timeout), q.thaw())
		}
		// A v1 freezer can stay FREEZING until asked again (runc asks
		// again too).
		if !q.V2 && i%100 == 0 {
			if err := write(freeze); err != nil {
				return time.Time{}, fmt.Errorf("freezing %s: %w", q.Dir, err)
			}
		}
		time.Sleep(time.Millisecond)
	}
}
