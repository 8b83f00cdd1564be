package bench

import (
	"strings"
	"testing"
)

func TestDefaultConfigCoversTheIssue(t *testing.T) {
	c, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	base, ok := c.Mode(c.Baseline)
	if s, _, _ := base.Describe(); !ok || s != "Sequential" || base.Workload != "StatefulSet" {
		t.Errorf("baseline %q is %+v: want Sequential on a StatefulSet (stop-and-copy)", c.Baseline, base)
	}
	ref, ok := c.Mode(c.Reference)
	if s, tr, rp := ref.Describe(); !ok || s != "ShadowPod" || tr != "Registry" || rp != "Cutoff" {
		t.Errorf("reference %q is %s/%s/%s: want ShadowPod + Registry + Cutoff (MS2M)", c.Reference, s, tr, rp)
	}
	full, err := c.Matrix("full", Preset{})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(full.Runs()); got != len(c.Modes)*7*3*3 {
		t.Errorf("full preset has %d runs, want every mode × 7 rates × 3 states × 3 reps = %d", got, len(c.Modes)*63)
	}
	if c.Run.Delay.Milliseconds() != 20 {
		t.Errorf("consumer delay %s: want 20ms (capacity ~50 msg/s)", c.Run.Delay.Duration)
	}
	quick, err := c.Matrix("quick", Preset{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range quick.Modes {
		names[m.Name] = true
	}
	if !names[c.Baseline] || !names[c.Reference] || len(quick.Runs()) > 9 {
		t.Errorf("quick preset: modes %v, %d runs; want the baseline and MS2M in at most 9 runs", names, len(quick.Runs()))
	}
}

func TestConfigRejects(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown spec field":   {modes(`{name: a, workload: Pod, spec: {checkpointMode: PostCopy}}`), `unknown field "checkpointMode"`},
		"bench-owned field":    {modes(`{name: a, workload: Pod, spec: {targetNode: node-c}}`), "set by the bench"},
		"bad workload":         {modes(`{name: a, workload: DaemonSet}`), "DaemonSet"},
		"duplicate mode":       {modes(`{name: a, workload: Pod}`, `{name: a, workload: Pod}`), "twice"},
		"mode name for a CSV":  {modes(`{name: "a,b", workload: Pod}`), "mode name"},
		"unknown baseline":     {"baseline: z\nreference: a\n" + modeList(`{name: a, workload: Pod}`), `"z" is not defined`},
		"preset of a stranger": {modes(`{name: a, workload: Pod}`) + "presets: {p: {modes: [b]}}\n", `unknown mode "b"`},
		"bad state":            {modes(`{name: a, workload: Pod}`) + "presets: {p: {states: [lots]}}\n", "lots"},
		"typo at top level":    {modes(`{name: a, workload: Pod}`) + "preset: {}\n", "preset"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func modeList(ms ...string) string { return "modes:\n- " + strings.Join(ms, "\n- ") + "\n" }

func modes(ms ...string) string { return "baseline: a\nreference: a\n" + modeList(ms...) }

// A mode is data: a spec field the bench code never names reaches the
// migration as written.
func TestModeSpecIsData(t *testing.T) {
	c, err := ParseConfig([]byte(modes(`{name: a, workload: Deployment, spec: {identitySwapMode: ExchangeFence, replayCutoffSeconds: 7, timeouts: {replay: 90s}}}`)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Modes[0].MigrationSpec()
	if err != nil {
		t.Fatal(err)
	}
	if s.IdentitySwapMode != "ExchangeFence" || s.ReplayCutoffSeconds != 7 || s.Timeouts.Replay.Seconds() != 90 {
		t.Fatalf("spec %+v", s)
	}
	if k := c.Modes[0].SpecKey(); k != `{"identitySwapMode":"ExchangeFence","replayCutoffSeconds":7,"timeouts":{"replay":"90s"}}` {
		t.Fatalf("spec key %s: want canonical JSON", k)
	}
	if st, tr, rp := c.Modes[0].Describe(); st != "Auto" || tr != "Registry" || rp != "Cutoff" {
		t.Fatalf("described as %s/%s/%s: want the API's defaults", st, tr, rp)
	}
}
