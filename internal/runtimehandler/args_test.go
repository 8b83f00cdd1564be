package runtimehandler

import (
	"reflect"
	"slices"
	"testing"
)

// The command lines containerd's runc shim (go-runc) and CRI-O give runc.
func TestParse(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want Invocation
	}{
		{"containerd create", []string{"--root", "/run/containerd/runc/k8s.io", "--log", "/b/log.json", "--log-format", "json",
			"create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--no-pivot", "abc123"},
			Invocation{Root: "/run/containerd/runc/k8s.io", Log: "/b/log.json", LogFormat: "json", Command: "create",
				Bundle: "/b", PidFile: "/b/init.pid", NoPivot: true, ID: "abc123"}},
		{"= forms and systemd", []string{"--systemd-cgroup", "--root=/r", "create", "-b", "/b", "--pid-file=/p", "--console-socket", "/s", "id1"},
			Invocation{Root: "/r", Command: "create", Bundle: "/b", PidFile: "/p", ConsoleSocket: "/s", ID: "id1"}},
		{"start", []string{"--root", "/r", "start", "id2"}, Invocation{Root: "/r", Command: "start", ID: "id2"}},
		{"delete --force", []string{"--root", "/r", "delete", "--force", "id3"}, Invocation{Root: "/r", Command: "delete", ID: "id3"}},
		{"version", []string{"--version"}, Invocation{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.args)
			if err != nil {
				t.Fatal(err)
			}
			got.Globals, got.Args = nil, nil
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", c.args, got, c.want)
			}
		})
	}
}

func TestParseKeepsGlobalsForRestore(t *testing.T) {
	inv, err := Parse([]string{"--root", "/r", "--log", "/l", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--no-pivot", "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got := restoreArgs(inv, "/staged", false)
	want := []string{"--root", "/r", "--log", "/l", "--log-format", "json", "--systemd-cgroup",
		"restore", "--detach", "--no-subreaper", "--bundle", "/b", "--image-path", "/staged/checkpoint",
		"--work-path", "/staged/work", "--pid-file", "/b/init.pid", "--no-pivot", "c1"}
	if !slices.Equal(got, want) {
		t.Errorf("restoreArgs\n got %q\nwant %q", got, want)
	}
	// post-copy: the pages come from the agent's lazy-pages daemon, which
	// waits on the same work directory
	got = restoreArgs(inv, "/staged", true)
	lazy := slices.Insert(slices.Clone(want), slices.Index(want, "--pid-file"), "--lazy-pages")
	if !slices.Equal(got, lazy) {
		t.Errorf("restoreArgs of a lazy checkpoint\n got %q\nwant %q", got, lazy)
	}
}

func TestParseRefusesMissingValue(t *testing.T) {
	if _, err := Parse([]string{"--root"}); err == nil {
		t.Error("a global option without its value was accepted")
	}
	if _, err := Parse([]string{"create", "--bundle"}); err == nil {
		t.Error("--bundle without its value was accepted")
	}
}
