package sdk

import (
	"strings"
	"testing"
)

func TestRouteStep(t *testing.T) {
	primary := route{mode: Primary}
	awaiting := route{mode: AwaitingReplay}
	replayR := route{mode: Replaying, replay: "r"}
	drainR := route{mode: Draining, replay: "r"}
	start := func(q string) event { return event{kind: evStartReplay, queue: q} }
	end := event{kind: evEndReplay}
	drained := event{kind: evDrained}
	restored := event{kind: evRestored}
	release := event{kind: evRelease}
	released := route{mode: Released}

	for _, tc := range []struct {
		name     string
		from     route
		ev       event
		want     route
		wantNote string // substring; "" means no note
	}{
		{"restore stops the primary", primary, restored, awaiting, ""},
		{"START_REPLAY starts the replay", awaiting, start("r"), replayR, ""},
		{"END_REPLAY drains", replayR, end, drainR, ""},
		{"empty replay queue: primary", drainR, drained, primary, ""},

		{"END_REPLAY before START_REPLAY waits", awaiting, end, awaiting, "without START_REPLAY"},
		{"END_REPLAY in primary ignored", primary, end, primary, "ignored"},
		{"duplicate END_REPLAY", drainR, end, drainR, "duplicate"},
		{"duplicate START_REPLAY", replayR, start("r"), replayR, "duplicate"},
		{"newer START_REPLAY followed", replayR, start("s"), route{mode: Replaying, replay: "s"}, "newer"},
		{"START_REPLAY while draining waits for the drain", drainR, start("s"),
			route{mode: Draining, replay: "r", next: "s"}, "after the drain"},
		{"deferred replay after the drain", route{mode: Draining, replay: "r", next: "s"}, drained,
			route{mode: Replaying, replay: "s"}, ""},
		{"START_REPLAY in primary followed", primary, start("r"), replayR, "restore not detected"},
		{"restored again mid-replay", replayR, restored, awaiting, "restored again"},
		{"drained out of place", replayR, drained, replayR, "ignored"},

		{"RELEASE lets go of the primary", primary, release, released, ""},
		{"duplicate RELEASE", released, release, released, "duplicate"},
		{"RELEASE to a replaying target ignored", replayR, release, replayR, "ignored"},
		{"RELEASE to an awaiting target ignored", awaiting, release, awaiting, "ignored"},
		{"released stays off the primary", released, end, released, "ignored"},
		{"a released source restored awaits its replay", released, restored, awaiting, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, note := tc.from.step(tc.ev)
			if got != tc.want {
				t.Errorf("route %+v, want %+v", got, tc.want)
			}
			if (tc.wantNote == "") != (note == "") || !strings.Contains(note, tc.wantNote) {
				t.Errorf("note %q, want one containing %q", note, tc.wantNote)
			}
		})
	}
}

func TestRouteSource(t *testing.T) {
	for r, want := range map[route]string{
		{mode: Primary}:                "orders",
		{mode: AwaitingReplay}:         "",
		{mode: Replaying, replay: "r"}: "r",
		{mode: Draining, replay: "r"}:  "",
		{mode: Released}:               "",
	} {
		if got := r.source("orders"); got != want {
			t.Errorf("%+v consumes %q, want %q", r, got, want)
		}
	}
	if Mode(7).String() != "Mode(7)" || Draining.String() != "Draining" {
		t.Fatal("mode names")
	}
}
