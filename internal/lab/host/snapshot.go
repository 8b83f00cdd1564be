package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Snapshot is the part of the host's state the lab touches. Two snapshots,
// before `up` and after `down`, must be equal.
type Snapshot struct {
	Mounts  []string          `json:"mounts"`
	Cgroups []string          `json:"cgroups"`
	Links   []string          `json:"links"`
	Routes  []string          `json:"routes"`
	NetNS   []string          `json:"netns"`
	Nft     []string          `json:"nft"`
	Sysctls map[string]string `json:"sysctls"`
	Files   map[string]string `json:"files"`
	// Procs are live processes of the lab: running a binary from the lab's
	// directories or naming its state directory on their command line. Zombies are not
	// counted: they hold no resource, and those whose parent is PID 1 (which
	// never reaps here) cannot be removed by anyone.
	Procs []string `json:"procs"`
}

// SnapshotOptions says where the lab lives.
type SnapshotOptions struct {
	// ExeDirs: a process running a binary from below them is the lab's.
	ExeDirs []string
	// ArgDirs: a process naming them in its arguments is the lab's (the
	// Erlang VM of RabbitMQ runs a system binary on the lab's data).
	ArgDirs    []string
	Nft        string // nft binary; empty skips the nftables part
	CgroupRoot string // /sys/fs/cgroup
}

// Take records the host's state.
func Take(ctx context.Context, o SnapshotOptions) (*Snapshot, error) {
	if o.CgroupRoot == "" {
		o.CgroupRoot = "/sys/fs/cgroup"
	}
	s := &Snapshot{Sysctls: map[string]string{}, Files: map[string]string{}}
	ms, err := Mounts()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		s.Mounts = append(s.Mounts, m.Point)
	}
	sort.Strings(s.Mounts)
	s.Cgroups = topCgroups(o.CgroupRoot)
	links, err := Links(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		s.Links = append(s.Links, l.Name+" "+l.Kind)
	}
	sort.Strings(s.Links)
	if s.Routes, err = Routes(ctx); err != nil {
		return nil, err
	}
	s.NetNS = netNamespaces()
	if o.Nft != "" {
		if s.Nft, err = NftTables(ctx, o.Nft); err != nil {
			return nil, err
		}
	}
	for _, n := range KubeletSysctls {
		s.Sysctls[n], _ = ReadSysctl(n)
	}
	for _, d := range append(slices.Clone(HostDirs), RuncCRIUConf) {
		s.Files[d] = fileState(d)
	}
	s.Procs = labProcs(o.ExeDirs, o.ArgDirs)
	return s, nil
}

func topCgroups(root string) []string {
	var out []string
	hs, _ := os.ReadDir(root)
	for _, h := range hs {
		hp := filepath.Join(root, h.Name())
		if fi, err := os.Lstat(hp); err != nil || !fi.IsDir() {
			continue
		}
		ents, _ := os.ReadDir(hp)
		for _, e := range ents {
			if e.IsDir() {
				out = append(out, h.Name()+"/"+e.Name())
			}
		}
	}
	sort.Strings(out)
	return out
}

func netNamespaces() []string {
	set := map[string]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil {
			set[l] = true
		}
	}
	ms, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(ms), "\n") {
		f := strings.Fields(line)
		// A bind-mounted namespace shows as an nsfs mount.
		if i := slices.Index(f, "-"); i > 0 && i+1 < len(f) && f[i+1] == "nsfs" {
			set["nsfs mount "+unescape(f[4])] = true
		}
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func fileState(p string) string {
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return "absent"
	case fi.IsDir():
		return "dir"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "unreadable"
	}
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:8])
}

func labProcs(exeDirs, argDirs []string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		line := strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")
		ours := false
		for _, d := range exeDirs {
			ours = ours || d != "" && strings.HasPrefix(exe, d+"/")
		}
		for _, d := range argDirs {
			ours = ours || d != "" && (strings.Contains(line, d+"/") || strings.HasSuffix(line, d))
		}
		if !ours {
			continue
		}
		if len(line) > 160 {
			line = line[:160] + "..."
		}
		out = append(out, fmt.Sprintf("pid %s %s", e.Name(), line))
	}
	return out
}

// Diff lists how after differs from before, one line per difference.
func Diff(before, after *Snapshot) []string {
	var d []string
	set := func(what string, b, a []string) {
		for _, x := range a {
			if !slices.Contains(b, x) {
				d = append(d, fmt.Sprintf("%s added: %s", what, x))
			}
		}
		// Other processes on the host come and go with their own network
		// namespaces; only a namespace the lab added is its leftover.
		if what == "netns" {
			return
		}
		for _, x := range b {
			if !slices.Contains(a, x) {
				d = append(d, fmt.Sprintf("%s gone: %s", what, x))
			}
		}
	}
	set("mount", before.Mounts, after.Mounts)
	set("cgroup", before.Cgroups, after.Cgroups)
	set("link", before.Links, after.Links)
	set("route", before.Routes, after.Routes)
	set("netns", before.NetNS, after.NetNS)
	set("nft table", before.Nft, after.Nft)
	for _, p := range after.Procs {
		d = append(d, "lab process left: "+p)
	}
	kv := func(what string, b, a map[string]string) {
		keys := make([]string, 0, len(b))
		for k := range b {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if b[k] != a[k] {
				d = append(d, fmt.Sprintf("%s %s: %s before, %s after", what, k, b[k], a[k]))
			}
		}
	}
	kv("sysctl", before.Sysctls, after.Sysctls)
	kv("file", before.Files, after.Files)
	return d
}
