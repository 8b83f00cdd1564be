package brokertest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/sdk/control"
)

func runControl(t *testing.T, env Env) {
	t.Run("StartThenEnd", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		h := dial(t, env, s, migrationID(s, "c"))
		pod := podName(s, "target")
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		must(t, "StartReplay", h.StartReplay(ctx(t), control.QueueName(pod), &rec))
		must(t, "EndReplay", h.EndReplay(ctx(t), control.QueueName(pod), &rec))
		if rec.ControlQueue != control.QueueName(pod) {
			t.Errorf("recorded control queue %q, want %q", rec.ControlQueue, control.QueueName(pod))
		}

		got := env.Receive(t, s, control.QueueName(pod), 2)
		var types []string
		for _, body := range got {
			m, err := control.Decode([]byte(body))
			if err != nil {
				t.Fatalf("control message %s: %v", body, err)
			}
			types = append(types, m.Type)
			if m.Type != control.StartReplay {
				continue
			}
			if p, _ := m.Replay(); p.Queue != rec.ReplayQueue {
				t.Errorf("START_REPLAY names queue %q, want the replay queue %q", p.Queue, rec.ReplayQueue)
			}
		}
		if len(types) != 2 || types[0] != control.StartReplay || types[1] != control.EndReplay {
			t.Errorf("control messages %q, want START_REPLAY then END_REPLAY", types)
		}

		// the control queue was made for the migration: teardown takes it
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	t.Run("Reports", func(t *testing.T) {
		// the target answers where START_REPLAY says; Reports takes each
		// report once, and teardown removes where they went
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		h := dial(t, env, s, migrationID(s, "r"))
		pod := podName(s, "target")
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		must(t, "StartReplay", h.StartReplay(ctx(t), control.QueueName(pod), &rec))
		m, err := control.Decode([]byte(env.Receive(t, s, control.QueueName(pod), 1)[0]))
		must(t, "decoding START_REPLAY", err)
		p, _ := m.Replay()
		if p.ReplyTo == "" || p.ReplyTo != rec.ReplyQueue {
			t.Fatalf("START_REPLAY asks for reports on %q, record says %q", p.ReplyTo, rec.ReplyQueue)
		}
		sent := []control.Report{{Type: control.ReplayStarted, Pod: pod}, {Type: control.ReplayDone, Pod: pod, Replayed: 7, Duplicates: 2, Gaps: 1, Missing: 3}}
		for _, r := range sent {
			env.Send(t, s, p.ReplyTo, string(r.Encode()))
		}
		env.Send(t, s, p.ReplyTo, "not a report")
		var got []control.Report
		for deadline := time.Now().Add(5 * time.Second); len(got) < len(sent) && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			more, err := h.Reports(ctx(t), &rec)
			must(t, "Reports", err)
			got = append(got, more...)
		}
		if !slices.Equal(got, sent) {
			t.Errorf("Reports gave %+v, want %+v", got, sent)
		}
		if again, err := h.Reports(ctx(t), &rec); err != nil || len(again) != 0 {
			t.Errorf("Reports again: %+v, %v; want nothing new", again, err)
		}
		// AwaitReports waits for the next one, and gives up empty-handed
		// when none comes.
		late := control.Report{Type: control.Released, Pod: pod, Fence: "m"}
		time.AfterFunc(100*time.Millisecond, func() { env.Send(t, s, p.ReplyTo, string(late.Encode())) })
		if got, err := h.AwaitReports(ctx(t), &rec, 5*time.Second); err != nil || len(got) != 1 || got[0] != late {
			t.Errorf("AwaitReports gave %+v, %v; want %+v", got, err, late)
		}
		if got, err := h.AwaitReports(ctx(t), &rec, 50*time.Millisecond); err != nil || len(got) != 0 {
			t.Errorf("AwaitReports with nothing to come gave %+v, %v", got, err)
		}
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	t.Run("Release", func(t *testing.T) {
		// RELEASE goes to the source's control queue, names where to
		// answer and which migration asks, and leaves the target's
		// control queue as the one the record names
		t.Parallel()
		s := env.NewStream(t)
		before := env.Snapshot(t, s)
		id := migrationID(s, "l")
		h := dial(t, env, s, id)
		source, target := podName(s, "source"), podName(s, "target")
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		must(t, "StartReplay", h.StartReplay(ctx(t), control.QueueName(target), &rec))
		must(t, "Release", h.Release(ctx(t), control.QueueName(source), &rec))
		if rec.ControlQueue != control.QueueName(target) {
			t.Errorf("recorded control queue %q after Release, want the target's %q", rec.ControlQueue, control.QueueName(target))
		}
		m, err := control.Decode([]byte(env.Receive(t, s, control.QueueName(source), 1)[0]))
		must(t, "decoding RELEASE", err)
		p, err := m.ReleaseOf()
		if err != nil || m.Type != control.Release || p.ReplyTo != rec.ReplyQueue || p.Migration != id {
			t.Errorf("%s %+v (%v), want RELEASE answered on %q for migration %q", m.Type, p, err, rec.ReplyQueue, id)
		}
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
		wantSameTopology(t, "after Teardown", before, env.Snapshot(t, s))
	})

	t.Run("StartBeforePrepare", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		err := dial(t, env, s, migrationID(s, "c")).StartReplay(ctx(t), control.QueueName(podName(s, "target")), &v1alpha1.BrokerStatus{})
		if err == nil {
			t.Fatal("StartReplay without a replay queue succeeded")
		}
	})

	t.Run("DeleteControlQueue", func(t *testing.T) {
		t.Parallel()
		s := env.NewStream(t)
		h := dial(t, env, s, migrationID(s, "c"))
		pod := podName(s, "target")
		var rec v1alpha1.BrokerStatus
		must(t, "Prepare", h.Prepare(ctx(t), &rec))
		must(t, "StartReplay", h.StartReplay(ctx(t), control.QueueName(pod), &rec))
		var want []string
		for _, line := range env.Snapshot(t, s) {
			if !strings.Contains(line, control.QueueName(pod)) {
				want = append(want, line)
			}
		}
		must(t, "DeleteControlQueue", h.DeleteControlQueue(ctx(t), control.QueueName(pod)))
		wantSameTopology(t, "after DeleteControlQueue (the control queue gone, nothing else)", want, env.Snapshot(t, s))
		must(t, "DeleteControlQueue again", h.DeleteControlQueue(ctx(t), control.QueueName(pod)))
		must(t, "DeleteControlQueue of a pod that never had one", h.DeleteControlQueue(ctx(t), control.QueueName(podName(s, "never"))))
		must(t, "Teardown", h.Teardown(ctx(t), &rec))
	})
}
