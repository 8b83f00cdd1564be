package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// RuncCRIUConf is the configuration file runc makes CRIU read on every dump
// and restore. The kubelet's checkpoint API offers no TCP options and runc
// 1.1 always sends tcp_established=false, so only this file can make CRIU
// close a pod's live TCP connections (tcp-close: a restored pod has a new
// IP and its peers must reconnect) and skip half-open ones.
//
// No network lock: with tcp-close no dumped connection is ever resumed,
// so nothing needs the network held still while CRIU dumps, and a lock
// drops the packets of a connection that was busy when its container
// froze (ms2m's freeze hook freezes it a moment before CRIU locks): TCP's
// retransmission backs off, and a ShadowPod source that serves on stopped
// processing for about 1.1 s after its dump in 4 of 5 lab runs with
// nftables' lock, in none of 3 without.
const RuncCRIUConf = "/etc/criu/runc.conf"

// RuncCRIUOptions is the content the lab installs.
const RuncCRIUOptions = "tcp-close\nskip-in-flight\nnetwork-lock skip\n"

// saved records a host file's previous content, or its absence.
type saved struct {
	Path    string   `json:"path"`
	Existed bool     `json:"existed"`
	Content []byte   `json:"content,omitempty"`
	Mode    uint32   `json:"mode,omitempty"`
	NewDirs []string `json:"newDirs,omitempty"`
}

// InstallFile writes content to path after recording in record what path
// held before (once: a second `up` keeps the first record).
func InstallFile(record, path string, content []byte) error {
	if _, err := os.Stat(record); errors.Is(err, os.ErrNotExist) {
		s := saved{Path: path}
		if fi, err := os.Stat(path); err == nil {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			s.Existed, s.Content, s.Mode = true, b, uint32(fi.Mode().Perm())
		}
		for d := filepath.Dir(path); d != "/"; d = filepath.Dir(d) {
			if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
				s.NewDirs = append(s.NewDirs, d)
			}
		}
		b, _ := json.Marshal(s)
		if err := writeAtomic(record, b, 0o600); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, content, 0o644)
}

// RestoreFile puts back what record says path held, removes the
// directories that were created for it, and removes record.
func RestoreFile(record string) error {
	b, err := os.ReadFile(record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var s saved
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.Existed {
		if err := os.WriteFile(s.Path, s.Content, os.FileMode(s.Mode)); err != nil {
			return err
		}
		if err := os.Chmod(s.Path, os.FileMode(s.Mode)); err != nil {
			return err
		}
	} else if err := os.Remove(s.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, d := range s.NewDirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s was created for %s and is not empty now: %w", d, s.Path, err)
		}
	}
	return os.Remove(record)
}

// HostDirs are host-wide directories that containerd, its shims, runc,
// libcni or the kubelet may create even when told to keep their state in
// the lab's directories. The ones the lab creates are removed at `down`.
var HostDirs = []string{
	"/run/containerd", "/run/runc", "/run/netns", "/run/nri", "/var/lib/cni", "/etc/cni", "/opt/cni",
	"/opt/containerd", "/var/lib/containerd", "/etc/containerd", "/var/lib/kubelet", "/var/log/pods",
	"/var/log/containers", "/etc/kubernetes", "/var/lib/nri", "/etc/nri", "/opt/nri", "/etc/cdi", "/var/run/cdi",
	// the agents' and the runtime handler's, where the lab put them
	"/var/lib/ms2m",
}

// RecordHostDirs notes in record which of HostDirs are absent (once).
func RecordHostDirs(record string) error {
	if _, err := os.Stat(record); err == nil {
		return nil
	}
	var absent []string
	for _, d := range HostDirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			absent = append(absent, d)
		}
	}
	b, _ := json.Marshal(absent)
	return writeAtomic(record, b, 0o644)
}

// RemoveNewHostDirs removes those of HostDirs that record says were absent
// before the lab came up, and then record.
func RemoveNewHostDirs(record string) ([]string, error) {
	b, err := os.ReadFile(record)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var absent []string
	if err := json.Unmarshal(b, &absent); err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, d := range absent {
		if !slices.Contains(HostDirs, d) {
			continue
		}
		if _, err := os.Lstat(d); err != nil {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, d)
	}
	if len(errs) > 0 {
		return removed, errors.Join(errs...)
	}
	return removed, os.Remove(record)
}
