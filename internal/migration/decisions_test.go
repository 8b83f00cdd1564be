package migration

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestResolveStrategy(t *testing.T) {
	for _, tc := range []struct {
		spec  v1alpha1.StatefulMigrationSpec
		owner string
		want  v1alpha1.MigrationStrategy
	}{
		{v1alpha1.StatefulMigrationSpec{}, "", v1alpha1.StrategyShadowPod},
		{v1alpha1.StatefulMigrationSpec{MigrationStrategy: "auto"}, "ReplicaSet", v1alpha1.StrategyShadowPod},
		{v1alpha1.StatefulMigrationSpec{MigrationStrategy: "Auto"}, "StatefulSet", v1alpha1.StrategySequential},
		{v1alpha1.StatefulMigrationSpec{IdentitySwapMode: v1alpha1.IdentitySwapExchangeFence}, "StatefulSet", v1alpha1.StrategyShadowPod},
		{v1alpha1.StatefulMigrationSpec{IdentitySwapMode: v1alpha1.IdentitySwapNone}, "StatefulSet", v1alpha1.StrategySequential},
		{v1alpha1.StatefulMigrationSpec{MigrationStrategy: v1alpha1.StrategySequential}, "ReplicaSet", v1alpha1.StrategySequential},
		{v1alpha1.StatefulMigrationSpec{MigrationStrategy: v1alpha1.StrategyShadowPod}, "StatefulSet", v1alpha1.StrategyShadowPod},
	} {
		got, why := ResolveStrategy(&tc.spec, tc.owner)
		if got != tc.want || why == "" {
			t.Errorf("ResolveStrategy(%+v, %q) = %s (%q), want %s with a reason", tc.spec, tc.owner, got, why, tc.want)
		}
	}
}

func TestTargetPodName(t *testing.T) {
	if got := TargetPodName("consumer-0", v1alpha1.StrategySequential); got != "consumer-0" {
		t.Errorf("sequential keeps the name, got %s", got)
	}
	if got := TargetPodName("consumer-0", v1alpha1.StrategyShadowPod); got != "consumer-0-shadow" {
		t.Errorf("got %s", got)
	}
	long := strings.Repeat("a", 60)
	got := TargetPodName(long, v1alpha1.StrategyShadowPod)
	if len(got) > 63 || !strings.HasSuffix(got, "-shadow") {
		t.Errorf("long name -> %q (%d chars)", got, len(got))
	}
	if got == TargetPodName(strings.Repeat("a", 59)+"b", v1alpha1.StrategyShadowPod) {
		t.Errorf("different long names must not collide")
	}
}

func TestMigrationID(t *testing.T) {
	if got := MigrationID("m1", "0123456789abcdef"); got != "m1-01234567" {
		t.Fatal(got)
	}
}

func TestEnterPhaseRecordsTimings(t *testing.T) {
	st := &v1alpha1.StatefulMigrationStatus{}
	EnterPhase(st, v1alpha1.PhasePending, t0)
	if st.StartTime == nil {
		t.Fatal("entering Pending starts the clock")
	}
	EnterPhase(st, v1alpha1.PhaseCheckpointing, t0.Add(time.Second))
	EnterPhase(st, v1alpha1.PhaseCheckpointing, t0.Add(5*time.Second)) // re-run: no change
	EnterPhase(st, v1alpha1.PhaseTransferring, t0.Add(3*time.Second))
	if d := PhaseDuration(st, v1alpha1.PhaseCheckpointing); d != 2*time.Second {
		t.Fatalf("checkpointing took %s, want 2s", d)
	}
	if !PhaseStart(st).Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("transferring started %s", PhaseStart(st))
	}
	EnterPhase(st, v1alpha1.PhaseCompleted, t0.Add(10*time.Second))
	if st.TotalDuration.Duration != 10*time.Second || st.CompletionTime == nil {
		t.Fatalf("total %v", st.TotalDuration)
	}
	for _, pt := range st.PhaseTimings {
		if pt.End == nil || pt.Duration == nil {
			t.Fatalf("phase %s left open", pt.Phase)
		}
	}
	if len(st.PhaseTimings) != 3 || PhaseDuration(st, v1alpha1.PhasePending) != time.Second {
		t.Fatalf("timings %+v", st.PhaseTimings)
	}
}

func TestOverrun(t *testing.T) {
	spec := &v1alpha1.StatefulMigrationSpec{Timeouts: &v1alpha1.MigrationTimeouts{
		Checkpoint: &metav1.Duration{Duration: 10 * time.Second},
		Total:      &metav1.Duration{Duration: time.Minute},
	}}
	st := &v1alpha1.StatefulMigrationStatus{}
	EnterPhase(st, v1alpha1.PhaseCheckpointing, t0)
	if over, _ := Overrun(spec, st, t0.Add(9*time.Second)); over {
		t.Fatal("overrun too early")
	}
	if d := NextDeadline(spec, st, t0.Add(9*time.Second)); d != time.Second {
		t.Fatalf("next deadline %s, want 1s", d)
	}
	if over, msg := Overrun(spec, st, t0.Add(11*time.Second)); !over || !strings.Contains(msg, "Checkpointing") {
		t.Fatalf("want checkpoint overrun, got %v %q", over, msg)
	}
	EnterPhase(st, v1alpha1.PhaseReplaying, t0.Add(20*time.Second)) // default replay budget 10m
	if over, msg := Overrun(spec, st, t0.Add(61*time.Second)); !over || !strings.Contains(msg, "total") {
		t.Fatalf("want total overrun, got %v %q", over, msg)
	}
}

func TestDecideReplay(t *testing.T) {
	base := ReplayState{Mode: v1alpha1.ReplayCutoff, Cutoff: 30 * time.Second, Started: t0, CaughtUpBelow: 5}
	for _, tc := range []struct {
		name      string
		mode      v1alpha1.ReplayMode
		remaining int64
		after     time.Duration
		cut, up   bool
		overdue   bool
	}{
		{"cutoff caught up", v1alpha1.ReplayCutoff, 3, time.Second, true, true, false},
		{"cutoff behind", v1alpha1.ReplayCutoff, 500, 10 * time.Second, false, false, false},
		{"cutoff elapsed", v1alpha1.ReplayCutoff, 500, 30 * time.Second, true, false, false},
		{"drain behind after cutoff", v1alpha1.ReplayDrain, 500, time.Hour, false, false, false},
		{"drain caught up", v1alpha1.ReplayDrain, 0, time.Hour, true, true, false},
		// past the point of no return a drain that overran cuts over: the
		// target drains the rest on the primary queue
		{"drain overdue, source gone", v1alpha1.ReplayDrain, 500, time.Hour, true, false, true},
	} {
		s := base
		s.Mode, s.Remaining, s.Overdue = tc.mode, tc.remaining, tc.overdue
		d := DecideReplay(s, t0.Add(tc.after))
		if d.CutOver != tc.cut || d.CaughtUp != tc.up || d.Reason == "" {
			t.Errorf("%s: %+v", tc.name, d)
		}
		if !d.CutOver && (d.Recheck <= 0 || d.Recheck > 250*time.Millisecond) {
			t.Errorf("%s: recheck %s", tc.name, d.Recheck)
		}
	}
}

func TestPointOfNoReturn(t *testing.T) {
	st := &v1alpha1.StatefulMigrationStatus{}
	if PastPointOfNoReturn(st) {
		t.Fatal("fresh migration is not past the point of no return")
	}
	SetCondition(st, 1, v1alpha1.ConditionSourceStopped, metav1.ConditionFalse, "SomethingElse", "", t0)
	if PastPointOfNoReturn(st) {
		t.Fatal("a SourceStopped condition that is neither True nor Stopping is not past it")
	}
	SetCondition(st, 1, v1alpha1.ConditionSourceStopped, metav1.ConditionFalse, v1alpha1.ReasonSourceStopping, "", t0)
	if !PastPointOfNoReturn(st) {
		t.Fatal("a source whose stop was issued is past it: nothing brings it back")
	}
	SetCondition(st, 1, v1alpha1.ConditionSourceStopped, metav1.ConditionTrue, "Done", "", t0)
	if !PastPointOfNoReturn(st) {
		t.Fatal("a stopped source is past it")
	}
}

func TestReplayCovers(t *testing.T) {
	one := func(c ReplayCoverage) ReplayCoverage { c.Consumers = 1; return c }
	for _, tc := range []struct {
		name string
		c    ReplayCoverage
		want bool
	}{
		{"backlog from before the bind", one(ReplayCoverage{PrimaryReady: 500, BufferReady: 20, Prefetch: 1}), false},
		{"backlog worked off", one(ReplayCoverage{PrimaryReady: 40, BufferReady: 60, Prefetch: 10}), true},
		{"prefetch may still hold pre-bind messages", one(ReplayCoverage{PrimaryReady: 0, BufferReady: 5, Prefetch: 10}), false},
		{"prefetch passed", one(ReplayCoverage{PrimaryReady: 0, BufferReady: 12, Prefetch: 10}), true},
		{"assumed prefetch passed", one(ReplayCoverage{PrimaryReady: 0, BufferReady: 60, Prefetch: 50, PrefetchAssumed: true}), true},
		// The first confirmed loss: a prefetched burst, nothing published
		// since the bind. An idle stream is not a drained one.
		{"idle, holding a burst", one(ReplayCoverage{Prefetch: 20}), false},
		{"idle, fences handed out", one(ReplayCoverage{Prefetch: 20, Fences: 20}), true},
		{"fences still behind the burst", one(ReplayCoverage{PrimaryReady: 25, Prefetch: 20, Fences: 20}), false},
		{"fences and traffic together", one(ReplayCoverage{PrimaryReady: 3, BufferReady: 4, Prefetch: 20, Fences: 20}), true},
		// unknown or unlimited prefetch bounds nothing
		{"unknown prefetch", one(ReplayCoverage{PrimaryReady: 0, BufferReady: 100}), false},
		{"two consumers share the deliveries", ReplayCoverage{Consumers: 2, PrimaryReady: 0, BufferReady: 100, Prefetch: 10}, false},
		{"no consumer: the backlog cannot drain", ReplayCoverage{PrimaryReady: 3, BufferReady: 100, Prefetch: 1}, false},
	} {
		got, why := ReplayCovers(tc.c)
		if got != tc.want || why == "" {
			t.Errorf("%s: %v (%s)", tc.name, got, why)
		}
	}
}

func TestCheckWorkload(t *testing.T) {
	for _, tc := range []struct {
		kind              string
		strategy          v1alpha1.MigrationStrategy
		swap              v1alpha1.IdentitySwapMode
		ordinal, replicas int
		ok                bool
	}{
		{"Pod", v1alpha1.StrategyShadowPod, "", 0, 0, true},
		{"Pod", v1alpha1.StrategySequential, "", 0, 0, true},
		{"Deployment", v1alpha1.StrategyShadowPod, "", 0, 1, true},
		{"Deployment", v1alpha1.StrategySequential, "", 0, 1, false},
		{"StatefulSet", v1alpha1.StrategySequential, "", 0, 1, true},
		{"StatefulSet", v1alpha1.StrategySequential, "", 0, 3, false},
		{"StatefulSet", v1alpha1.StrategySequential, "", 2, 3, true},
		{"StatefulSet", v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapNone, 0, 1, false},
		{"StatefulSet", v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapExchangeFence, 0, 1, true},
		{"StatefulSet", v1alpha1.StrategyShadowPod, v1alpha1.IdentitySwapExchangeFence, 0, 2, false},
		{"Job", v1alpha1.StrategyShadowPod, "", 0, 1, false},
	} {
		ok, why := CheckWorkload(tc.kind, tc.strategy, tc.swap, tc.ordinal, tc.replicas)
		if ok != tc.ok || (!ok && why == "") {
			t.Errorf("%+v: %v %q", tc, ok, why)
		}
	}
}
