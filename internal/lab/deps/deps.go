// Package deps fetches the lab's non-Kubernetes binaries from Debian and the
// Go module proxy into a private cache: CRIU and containerd from Debian's
// newer suites (bookworm's are too old for these kernels), runc, the CNI
// plugins and the registry from bookworm, crictl from source. Packages are
// unpacked, never installed; versions are pinned by series and checked.
package deps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Package is one Debian package the lab needs.
type Package struct {
	Name   string   `json:"name"`
	Suites []string `json:"suites"`
	Want   Want     `json:"want"`
}

// Root is a private root that packages are unpacked into.
type Root struct {
	Name     string    `json:"name"`
	Packages []Package `json:"packages"`
	// Resolve pulls in the packages' dependencies from the same suite: the
	// root then runs on its own glibc through its own loader.
	Resolve bool `json:"resolve,omitempty"`
}

// CrictlVersion is the cri-tools release `go install` builds.
const CrictlVersion = "v1.34.0"

// Spec is what the lab pins. CRIU must be >= 4.2: 3.17 (bookworm) fails on
// the vDSO of current kernels and 4.1 cannot dump sockets on kernels >= 6.16.
var Spec = []Root{
	{Name: "criu", Resolve: true, Packages: []Package{
		{Name: "criu", Suites: []string{"forky", "sid"}, Want: Want{AtLeast: "4.2"}},
		// nft lists and removes the rules CRIU's network lock leaves.
		{Name: "nftables", Suites: []string{"forky", "sid"}},
	}},
	{Name: "containerd", Packages: []Package{{Name: "containerd", Suites: []string{"forky", "sid"}, Want: Want{Series: "2.1"}}}},
	// runc 1.1 is the release the lab's checkpoint/restore path is proven
	// with; it links the host's libseccomp.
	{Name: "runc", Packages: []Package{{Name: "runc", Suites: []string{"bookworm"}, Want: Want{Series: "1.1"}}}},
	{Name: "cni", Packages: []Package{{Name: "containernetworking-plugins", Suites: []string{"bookworm"}, Want: Want{Series: "1.1"}}}},
	{Name: "registry", Packages: []Package{{Name: "docker-registry", Suites: []string{"bookworm"}, Want: Want{Series: "2.8"}}}},
}

// neverPull are dependencies a private root needs no copy of: maintainer
// script helpers, not libraries.
var neverPull = []string{"debconf", "debconf-2.0", "dpkg", "perl-base", "adduser", "init-system-helpers", "lsb-base", "sysvinit-utils", "libc-bin", "install-info"}

// Paths are the fetched binaries.
type Paths struct {
	Dir           string `json:"dir"`
	CRIU          string `json:"criu"` // wrapper running criu on its own loader
	Nft           string `json:"nft"`
	ContainerdBin string `json:"containerdBin"`
	Runc          string `json:"runc"`
	CNIBin        string `json:"cniBin"`
	Registry      string `json:"registry"`
	Crictl        string `json:"crictl"`
}

// Installed is one unpacked package.
type Installed struct {
	Root    string `json:"root"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Suite   string `json:"suite"`
}

// Manifest records what a deps directory holds.
type Manifest struct {
	Key      string      `json:"key"`
	Packages []Installed `json:"packages"`
	Crictl   string      `json:"crictl"`
}

// Options of Ensure.
type Options struct {
	Cache  string // e.g. ~/.cache/ms2m
	Mirror string // default http://deb.debian.org/debian
	Logf   func(format string, args ...any)
}

func (o *Options) defaults() {
	if o.Mirror == "" {
		o.Mirror = "http://deb.debian.org/debian"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

func key(mirror string) string {
	b, _ := json.Marshal(struct {
		Spec   []Root
		Mirror string
		Crictl string
	}{Spec, mirror, CrictlVersion})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

func paths(dir string) *Paths {
	r := func(p ...string) string { return filepath.Join(append([]string{dir, "roots"}, p...)...) }
	return &Paths{
		Dir:           dir,
		CRIU:          filepath.Join(dir, "bin", "criu"),
		Nft:           filepath.Join(dir, "bin", "nft"),
		ContainerdBin: r("containerd", "usr", "bin"),
		Runc:          r("runc", "usr", "sbin", "runc"),
		CNIBin:        r("cni", "usr", "lib", "cni"),
		Registry:      r("registry", "usr", "bin", "docker-registry"),
		Crictl:        filepath.Join(dir, "bin", "crictl"),
	}
}

// ReadManifest returns what the deps directory of the current spec holds.
func ReadManifest(cache, mirror string) (*Manifest, *Paths, error) {
	o := Options{Cache: cache, Mirror: mirror}
	o.defaults()
	k := key(o.Mirror)
	dir := filepath.Join(cache, "lab", "deps-"+k)
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, err
	}
	if m.Key != k {
		return nil, nil, errors.New("deps manifest of another spec")
	}
	return &m, paths(dir), nil
}

// Ensure fetches whatever of Spec and crictl is missing and returns where
// the binaries are. A complete deps directory makes it a no-op.
func Ensure(ctx context.Context, o Options) (*Paths, *Manifest, error) {
	o.defaults()
	if m, p, err := ReadManifest(o.Cache, o.Mirror); err == nil {
		return p, m, nil
	}
	k := key(o.Mirror)
	dir := filepath.Join(o.Cache, "lab", "deps-"+k)
	// A half-made directory from an interrupted fetch is started over.
	if err := os.RemoveAll(dir); err != nil {
		return nil, nil, err
	}
	p := paths(dir)
	m := &Manifest{Key: k}
	// Only each package's first suite is listed at first: every suite's
	// lists cost time at each apt call. Later suites are added when needed.
	var suites []string
	for _, r := range Spec {
		for _, pk := range r.Packages {
			if !slices.Contains(suites, pk.Suites[0]) {
				suites = append(suites, pk.Suites[0])
			}
		}
	}
	apt := &Apt{Dir: filepath.Join(dir, "apt"), Suites: suites, Mirror: o.Mirror}
	update := func() error {
		if err := apt.Init(); err != nil {
			return err
		}
		o.Logf("apt-get update (private lists: %v)", apt.Suites)
		if err := apt.Update(ctx); err != nil {
			return fmt.Errorf("fetching Debian package lists: %w", err)
		}
		return nil
	}
	if err := update(); err != nil {
		return nil, nil, err
	}
	debs := filepath.Join(dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, nil, err
	}
	for _, r := range Spec {
		inst, err := fetchRoot(ctx, apt, r, debs, filepath.Join(dir, "roots", r.Name))
		var more needSuite
		if errors.As(err, &more) {
			o.Logf("%s", more.why)
			apt.Suites = append(apt.Suites, more.suite)
			if err := update(); err != nil {
				return nil, nil, err
			}
			inst, err = fetchRoot(ctx, apt, r, debs, filepath.Join(dir, "roots", r.Name))
		}
		if err != nil {
			return nil, nil, err
		}
		for _, i := range inst {
			if slices.ContainsFunc(r.Packages, func(p Package) bool { return p.Name == i.Name }) {
				o.Logf("  %s %s (%s)", i.Name, i.Version, i.Suite)
			}
		}
		m.Packages = append(m.Packages, inst...)
	}
	if err := writeWrappers(p); err != nil {
		return nil, nil, err
	}
	o.Logf("go install sigs.k8s.io/cri-tools/cmd/crictl@%s", CrictlVersion)
	if err := installCrictl(ctx, filepath.Dir(p.Crictl), o.Logf); err != nil {
		return nil, nil, err
	}
	m.Crictl = CrictlVersion
	_ = os.RemoveAll(debs)
	// The lists are only needed to fetch; the roots are what the lab runs.
	_ = os.RemoveAll(apt.Dir)
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		return nil, nil, err
	}
	return p, m, nil
}

// needSuite asks for one more suite in the lists.
type needSuite struct{ suite, why string }

func (n needSuite) Error() string { return n.why }

// fetchRoot picks, downloads and unpacks a root's packages, level by level
// through their dependencies when the root resolves them.
func fetchRoot(ctx context.Context, apt *Apt, r Root, debs, root string) ([]Installed, error) {
	chosen := map[string]Candidate{}
	rootSuite := ""
	level := r.Packages
	for len(level) > 0 {
		var names []string
		for _, pk := range level {
			if _, done := chosen[pk.Name]; !done && !slices.Contains(neverPull, pk.Name) && !slices.Contains(names, pk.Name) {
				names = append(names, pk.Name)
			}
		}
		if len(names) == 0 {
			break
		}
		cands, err := apt.Candidates(ctx, names)
		if err != nil {
			return nil, err
		}
		picked := map[string]string{}
		for _, pk := range level {
			if !slices.Contains(names, pk.Name) || picked[pk.Name] != "" {
				continue
			}
			c, err := pickIn(pk, cands[pk.Name], rootSuite, apt.Suites)
			if err != nil {
				return nil, err
			}
			if rootSuite == "" {
				rootSuite = c.Suite
			}
			chosen[pk.Name], picked[pk.Name] = c, c.Version
		}
		if !r.Resolve {
			break
		}
		deps, err := apt.Depends(ctx, picked)
		if err != nil {
			return nil, err
		}
		level = nil
		for _, ds := range deps {
			for _, d := range ds {
				level = append(level, Package{Name: d})
			}
		}
	}
	want := map[string]string{}
	for n, c := range chosen {
		want[n] = c.Version
	}
	files, err := apt.Download(ctx, debs, want)
	if err != nil {
		return nil, err
	}
	var out []Installed
	for n, c := range chosen {
		if err := Unpack(ctx, files[n], root); err != nil {
			return nil, err
		}
		out = append(out, Installed{Root: r.Name, Name: n, Version: c.Version, Suite: c.Suite})
	}
	slices.SortFunc(out, func(a, b Installed) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// pickIn picks pk's version from the first of its suites that has an
// acceptable one; a dependency comes from its root's suite.
func pickIn(pk Package, cands []Candidate, rootSuite string, listed []string) (Candidate, error) {
	suites := pk.Suites
	if len(suites) == 0 {
		suites = []string{rootSuite}
	}
	for _, s := range suites {
		if !slices.Contains(listed, s) {
			return Candidate{}, needSuite{s, fmt.Sprintf("%s %s: not in %v, trying Debian %s", pk.Name, pk.Want, listed, s)}
		}
		var in []Candidate
		for _, c := range cands {
			if c.Suite == s {
				in = append(in, c)
			}
		}
		if c, err := Pick(pk.Name, pk.Want, in); err == nil {
			return c, nil
		}
	}
	_, err := Pick(pk.Name, pk.Want, cands)
	if err == nil {
		err = fmt.Errorf("package %s %s is not in Debian %v", pk.Name, pk.Want, suites)
	}
	return Candidate{}, err
}

// writeWrappers makes bin/criu and bin/nft run on the root's own loader and
// libraries: they need a newer glibc than the host's.
func writeWrappers(p *Paths) error {
	root := filepath.Join(p.Dir, "roots", "criu")
	if err := os.MkdirAll(filepath.Dir(p.CRIU), 0o755); err != nil {
		return err
	}
	for path, bin := range map[string]string{p.CRIU: "usr/sbin/criu", p.Nft: "usr/sbin/nft"} {
		s := fmt.Sprintf(`#!/bin/sh
R=%s
exec "$R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/usr/lib/x86_64-linux-gnu" "$R/%s" "$@"
`, root, bin)
		if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
			return err
		}
	}
	return nil
}
