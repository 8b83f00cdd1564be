package sdk

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func writePodInfo(t *testing.T, dir, uid, name, hostname string) IdentityFiles {
	t.Helper()
	f := IdentityFiles{UID: filepath.Join(dir, "uid"), Name: filepath.Join(dir, "name"), Hostname: filepath.Join(dir, "hostname")}
	for path, v := range map[string]string{f.UID: uid, f.Name: name, f.Hostname: hostname} {
		_ = os.Remove(path)
		if v != "" {
			if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

func TestIdentityRead(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name           string
		uid, pod, host string
		want           Identity
	}{
		{"downward API", "u-1", "consumer-0", "ignored", Identity{UID: "u-1", Name: "consumer-0"}},
		{"hostname fallback", "", "", "consumer-1", Identity{Name: "consumer-1"}},
		{"uid with hostname", "u-2", "", "consumer-2", Identity{UID: "u-2", Name: "consumer-2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := writePodInfo(t, dir, tc.uid, tc.pod, tc.host).Read()
			if err != nil || got != tc.want {
				t.Fatalf("Read() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	t.Run("kernel hostname last", func(t *testing.T) {
		got, err := writePodInfo(t, dir, "", "", "").Read()
		host, _ := os.Hostname()
		if err != nil || got.Name != host {
			t.Fatalf("Read() = %+v, %v; want name %q", got, err, host)
		}
	})
}

func TestIdentityDiffers(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b Identity
		want bool
	}{
		{"same pod", Identity{UID: "u1", Name: "c-0"}, Identity{UID: "u1", Name: "c-0"}, false},
		{"StatefulSet restore: same name, new UID", Identity{UID: "u1", Name: "c-0"}, Identity{UID: "u2", Name: "c-0"}, true},
		{"ShadowPod restore", Identity{UID: "u1", Name: "c-0"}, Identity{UID: "u2", Name: "c-0-shadow"}, true},
		{"no UIDs, new name", Identity{UID: "", Name: "c-0"}, Identity{UID: "", Name: "c-1"}, true},
		{"no UIDs, same name: undetectable", Identity{UID: "", Name: "c-0"}, Identity{UID: "", Name: "c-0"}, false},
		{"UID vanished: unknown, not a move", Identity{UID: "u1", Name: "c-0"}, Identity{UID: "", Name: "c-0"}, false},
		{"UID appeared, name kept", Identity{UID: "", Name: "c-0"}, Identity{UID: "u1", Name: "c-0"}, false},
	} {
		if got := tc.a.Differs(tc.b); got != tc.want {
			t.Errorf("%s: Differs = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The consumer compares with the identity it booted with, then with the
// last one it saw, so a second migration is noticed too.
func TestConsumerDetectsRestore(t *testing.T) {
	dir := t.TempDir()
	files := writePodInfo(t, dir, "u1", "consumer-0", "")
	var restores []Identity
	c, err := NewConsumer(Config{URL: "amqp://unused", Queue: "q", Identity: files,
		Handler: func(context.Context, Message) error { return nil },
		Hooks:   Hooks{Restored: func(_, to Identity) { restores = append(restores, to) }}})
	if err != nil {
		t.Fatal(err)
	}
	if c.checkIdentity() || c.Mode() != Primary {
		t.Fatal("fresh process reported restored")
	}
	writePodInfo(t, dir, "u2", "consumer-0", "")
	if !c.checkIdentity() || c.Mode() != AwaitingReplay {
		t.Fatalf("StatefulSet restore missed: mode %s", c.Mode())
	}
	if c.checkIdentity() {
		t.Fatal("the same restore reported twice")
	}
	c.step(event{kind: evStartReplay, queue: "r"})
	c.step(event{kind: evEndReplay})
	c.step(event{kind: evDrained})
	writePodInfo(t, dir, "u3", "consumer-0-b", "")
	if !c.checkIdentity() || c.Mode() != AwaitingReplay {
		t.Fatal("second migration missed")
	}
	if len(restores) != 2 || restores[1] != (Identity{UID: "u3", Name: "consumer-0-b"}) || c.Counters().Restores != 2 {
		t.Fatalf("restores %v, counter %d", restores, c.Counters().Restores)
	}
	if st := c.Status(); st.BootIdentity != (Identity{UID: "u1", Name: "consumer-0"}) || st.Identity.UID != "u3" {
		t.Fatalf("status identities %+v / %+v", st.BootIdentity, st.Identity)
	}
}

func TestConsumerFromSnapshotStartsRestored(t *testing.T) {
	files := writePodInfo(t, t.TempDir(), "u9", "target", "")
	snap := Snapshot{Processed: 3, LastSeq: 3, Digest: Digest{1}}
	c, err := NewConsumer(Config{URL: "amqp://unused", Queue: "q", Identity: files, Restore: &snap,
		Handler: func(context.Context, Message) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode() != AwaitingReplay || !reflect.DeepEqual(c.Snapshot(), snap) {
		t.Fatalf("mode %s, snapshot %+v", c.Mode(), c.Snapshot())
	}
	if c.checkIdentity() {
		t.Fatal("its own pod taken for a restore")
	}
}
