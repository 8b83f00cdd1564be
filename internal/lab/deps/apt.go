package deps

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Apt runs apt-get and apt-cache against a private configuration: its own
// sources, lists, cache and (empty) dpkg status, so the system's apt setup
// is never read or changed.
type Apt struct {
	Dir    string
	Suites []string
	Mirror string
}

// Candidate is a version of a package one suite offers.
type Candidate struct {
	Version string `json:"version"`
	Suite   string `json:"suite"`
}

func (a *Apt) conf() string { return filepath.Join(a.Dir, "apt.conf") }

// Init writes the private configuration.
func (a *Apt) Init() error {
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.Dir, d), 0o755); err != nil {
			return err
		}
	}
	var src strings.Builder
	for _, s := range a.Suites {
		fmt.Fprintf(&src, "deb %s %s main\n", a.Mirror, s)
	}
	if err := os.WriteFile(filepath.Join(a.Dir, "sources.list"), []byte(src.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(a.Dir, "status"), nil, 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(`Dir::Etc::SourceList "%[1]s/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "%[1]s/lists";
Dir::Cache "%[1]s/cache";
Dir::State::status "%[1]s/status";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
Acquire::Languages "none";
`, a.Dir)
	return os.WriteFile(a.conf(), []byte(conf), 0o644)
}

func (a *Apt) run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "APT_CONFIG="+a.conf(), "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Update fetches the package lists of the configured suites.
func (a *Apt) Update(ctx context.Context) error {
	_, err := a.run(ctx, a.Dir, "apt-get", "update", "-qq")
	return err
}

// Candidates lists every version of each name in the configured suites.
// Every apt call parses all the lists, so names are asked in one call.
func (a *Apt) Candidates(ctx context.Context, names []string) (map[string][]Candidate, error) {
	out, err := a.run(ctx, a.Dir, "apt-cache", append([]string{"madison"}, names...)...)
	if err != nil && len(out) == 0 {
		return nil, err
	}
	return parseMadison(out), nil
}

// parseMadison reads lines like
// "  criu |    4.2.1-1 | http://deb.debian.org/debian forky/main amd64 Packages".
func parseMadison(out []byte) map[string][]Candidate {
	cs := map[string][]Candidate{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 3 || !strings.Contains(f[2], "Packages") {
			continue
		}
		src := strings.Fields(f[2])
		if len(src) < 2 {
			continue
		}
		suite, _, _ := strings.Cut(src[1], "/")
		name := strings.TrimSpace(f[0])
		cs[name] = append(cs[name], Candidate{Version: strings.TrimSpace(f[1]), Suite: suite})
	}
	return cs
}

// Depends returns, per package, the first alternative of each Depends and
// Pre-Depends entry of the given versions.
func (a *Apt) Depends(ctx context.Context, pkgs map[string]string) (map[string][]string, error) {
	args := []string{"show"}
	for n, v := range pkgs {
		args = append(args, n+"="+v)
	}
	out, err := a.run(ctx, a.Dir, "apt-cache", args...)
	if err != nil {
		return nil, err
	}
	return parseDepends(out, pkgs), nil
}

func parseDepends(show []byte, want map[string]string) map[string][]string {
	deps := map[string][]string{}
	for _, stanza := range strings.Split(string(show), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
				fields[k] = strings.TrimSpace(v)
			}
		}
		name := fields["Package"]
		if v, ok := want[name]; !ok || v != fields["Version"] {
			continue
		}
		if _, seen := deps[name]; seen {
			continue
		}
		deps[name] = []string{}
		for _, d := range strings.Split(fields["Pre-Depends"]+","+fields["Depends"], ",") {
			first, _, _ := strings.Cut(d, "|")
			n := strings.Fields(first)
			if len(n) == 0 {
				continue
			}
			dep, _, _ := strings.Cut(n[0], ":")
			deps[name] = append(deps[name], dep)
		}
	}
	return deps
}

// Download fetches each name=version into dir and returns the .debs' paths.
func (a *Apt) Download(ctx context.Context, dir string, pkgs map[string]string) (map[string]string, error) {
	args := []string{"download", "-qq"}
	for n, v := range pkgs {
		args = append(args, n+"="+v)
	}
	if _, err := a.run(ctx, dir, "apt-get", args...); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for n, v := range pkgs {
		m, _ := filepath.Glob(filepath.Join(dir, n+"_*.deb"))
		for _, f := range m {
			if got, err := debField(ctx, f, "Version"); err == nil && got == v {
				paths[n] = f
			}
		}
		if paths[n] == "" {
			return nil, fmt.Errorf("apt-get download %s=%s left no .deb", n, v)
		}
	}
	return paths, nil
}

func debField(ctx context.Context, deb, field string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", deb, field).Output()
	return strings.TrimSpace(string(out)), err
}

// Unpack extracts a .deb's files under root.
func Unpack(ctx context.Context, deb, root string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w: %s", filepath.Base(deb), err, out)
	}
	return nil
}
