package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// metric is one reported column.
type metric struct {
	col, title string
	unit       unit
}

var reportMetrics = []metric{
	{ColTotal, "Total migration time", unitMS},
	{ColDowntime, "Service downtime (failed /healthz probes)", unitMS},
	{ColStall, "Longest stall (slowest answered probe)", unitMS},
	{ColGap, "Processing gap (longest time without a message applied)", unitMS},
	{ColUnavailable, "No pod Ready (controller's measure)", unitMS},
	{ColHandoffGap, "Handoff gap (controller's measure: source stopped → target on the primary queue)", unitMS},
	{ColFreeze, "Checkpoint freeze", unitMS},
	{ColCheckpointBytes, "Checkpoint size", unitBytes},
	{ColBytesMoved, "Bytes moved", unitBytes},
	{ColBuffered, "Messages buffered for replay", unitCount},
	{ColReplayed, "Messages replayed", unitCount},
	{CPUColumn(RoleManager), "Manager CPU during the migration", unitSeconds},
	{CPUColumn(RoleSourceAgent), "Source agent CPU during the migration", unitSeconds},
	{CPUColumn(RoleTargetAgent), "Target agent CPU during the migration", unitSeconds},
	{RSSColumn(RoleManager), "Manager peak RSS", unitBytes},
	{RSSColumn(RoleSourceAgent), "Source agent peak RSS", unitBytes},
	{RSSColumn(RoleTargetAgent), "Target agent peak RSS", unitBytes},
	{ColWall, "Wall time of the run (setup, warm-up, migration, catch-up)", unitMS},
}

// PhaseRate is the rate of the phase breakdown: the first rate above the
// consumer's capacity in the MS2M evaluation.
const PhaseRate = 60

// WriteReport regenerates report.md and the plots from a results
// directory.
func WriteReport(dir string) error {
	meta, err := ReadMeta(dir)
	if err != nil {
		return err
	}
	rows, err := ReadCSVFile(filepath.Join(dir, ResultsFile))
	if err != nil {
		return err
	}
	t := NewTable(rows, meta.Config.Modes)
	figs, err := WritePlots(dir, t, meta.Config)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	RenderReport(&b, meta, t, figs)
	return os.WriteFile(filepath.Join(dir, ReportFile), b.Bytes(), 0o644)
}

// RenderReport writes the Markdown report.
func RenderReport(w io.Writer, meta Meta, t *Table, figs []Figure) {
	c := meta.Config
	title := "ms2m bench"
	if meta.Preset != "" {
		title += ": " + meta.Preset + " preset"
	}
	fmt.Fprintf(w, "# %s\n\n", title)
	cov := presetCoverage(meta, t)
	renderSetup(w, meta, t, cov)
	renderModes(w, c, t)
	fmt.Fprintf(w, "## Against the baselines\n\nRatios of medians of the same cell, measured in the same bench run: below 1× the mode is faster (or down for less time) than `%s` (stop-and-copy) or `%s` (ShadowPod + Registry + Cutoff, the MS2M configuration). ∞: the reference had none.\n\n", c.Baseline, c.Reference)
	for _, m := range []metric{reportMetrics[0], reportMetrics[1], reportMetrics[3]} {
		renderRatios(w, t, m, c.Baseline, c.Reference)
	}
	for _, f := range figs {
		fmt.Fprintf(w, "![%s](%s)\n\n", f.Title, f.File)
	}
	renderPhases(w, t)
	fmt.Fprintln(w, "## Every metric\n\nMedian [min–max] over the runs whose migration completed; (k of n) when some did not.")
	fmt.Fprintln(w)
	for _, m := range reportMetrics {
		renderMetric(w, t, m)
	}
	renderCorrectness(w, t)
	renderRunCounts(w, t, cov.RunsDone < cov.Runs)
	renderFailures(w, t)
}

// presetCoverage is how much of the named preset the table holds; zero
// when the preset is unknown (results of another config).
func presetCoverage(meta Meta, t *Table) Coverage {
	m, err := meta.Config.Matrix(meta.Preset, Preset{})
	if err != nil {
		return Coverage{}
	}
	return m.Coverage(t.All())
}

func renderSetup(w io.Writer, meta Meta, t *Table, cov Coverage) {
	var runs, failed int
	for _, r := range t.All() {
		runs++
		if r.Failed() {
			failed++
		}
	}
	fmt.Fprintf(w, "%d runs (%d failed): %s × %s × %s", runs, failed, plural(len(t.Modes), "mode"), plural(len(t.Rates), "rate"), plural(len(t.States), "state size"))
	if !meta.Started.IsZero() {
		fmt.Fprintf(w, ", started %s", meta.Started.UTC().Format("2006-01-02 15:04 MST"))
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w)
	renderCoverage(w, meta.Preset, cov)
	if meta.Command != "" {
		fmt.Fprintf(w, "- Command: `%s`\n", meta.Command)
	}
	if meta.Commit != "" {
		fmt.Fprintf(w, "- Commit: `%s`\n", meta.Commit)
	}
	if meta.Machine.Cores > 0 {
		fmt.Fprintf(w, "- Machine: %s. The whole lab (two kubelets, control plane, registry, RabbitMQ, producer and probes) shares it.\n", meta.Machine)
	}
	for _, s := range meta.Resumed {
		fmt.Fprintf(w, "- Resumed %s: `%s`", s.Started.UTC().Format("2006-01-02 15:04 MST"), s.Command)
		if s.Commit != "" && s.Commit != meta.Commit {
			fmt.Fprintf(w, " at commit `%s`", s.Commit)
		}
		if s.Machine != meta.Machine {
			fmt.Fprintf(w, " on %s", s.Machine)
		}
		fmt.Fprintln(w)
	}
	rs := meta.Config.Run
	if d := rs.Delay.Duration; d > 0 {
		fmt.Fprintf(w, "- Consumer: `examples/consumer` on the SDK, %s per message (capacity ≈ %.0f msg/s), prefetch %d; at higher rates its backlog grows throughout the run. Source `node-a`, target `node-b`.\n",
			d, 1/d.Seconds(), rs.Prefetch)
	}
	fmt.Fprintf(w, "- Each run: the run namespace cleared of the last run's objects, a fresh queue, the producer at the rate for %s before the migration and %s after it; then the serving pod (the target, or the source after a rollback) must reach the last message published — waited for as long as it keeps applying messages — and its digest is compared with the producer's.\n",
		rs.Warmup.Duration, rs.Settle.Duration)
	fmt.Fprintln(w, "- Service downtime, stall and processing gap are measured from outside as `make demo` does: `/healthz` through the Service's ready endpoints every 10 ms with a 1 s timeout (downtime: from a failed probe to the next good one; stall: the slowest good answer), and the stream's progress from every pod's `/progress` every 20 ms (gap: the longest time without a new message applied, after warm-up); the consumer's memory is checked once, through `/state`, after the last message (a check reads all of it while no message is applied: polled, it would cut a 512 MiB consumer's capacity by half). A target joins the Service only at cutover, when its replay ends (caught up, or at the Cutoff), so clients are not sent to state far behind the stream: with Sequential (no source left serving) the downtime therefore spans restore and replay, while the processing gap shows how long no message was applied at all.")
	fmt.Fprintln(w, "- Total and phase times, checkpoint size and freeze, bytes moved (Registry: the gzip-compressed image layer the source agent pushed to the registry, which the target node then pulls; Direct: the archive streamed agent to agent, uncompressed), messages buffered and replayed come from the StatefulMigration's status.")
	fmt.Fprintln(w, "- CPU and peak RSS of the manager and the agents are read from `/proc` on the host: the lab runs every container as a host process. The processes are those whose argv[0] is the project image's binary (`/usr/local/bin/manager`, `/usr/local/bin/agent`) inside a lab node's cgroup (an agent's node is its cgroup's). CPU is utime+stime sampled every 100 ms and cut to the migration (first phase's start to last phase's end, ±100 ms); peak RSS is VmHWM after resetting it (`clear_refs` 5) at the start of the run, so it covers the whole run. A process restarted during a run is left out of that run.")
	if t.Stale > 0 {
		fmt.Fprintf(w, "- %d rows of the CSV are left out: retried runs, or runs of an earlier definition of their mode.\n", t.Stale)
	}
	fmt.Fprintln(w)
}

// renderCoverage says how much of the preset the results hold, so a reader
// knows whether a cell's median stands on one run or on all repetitions.
func renderCoverage(w io.Writer, preset string, c Coverage) {
	switch {
	case c.RunsDone == c.Runs: // complete, or no preset to measure against
		return
	case c.Covered < c.Cells:
		fmt.Fprintf(w, "**In progress: %d of the %s preset's %d runs done; %d of its %d cells have a run.**", c.RunsDone, preset, c.Runs, c.Covered, c.Cells)
	default:
		fmt.Fprintf(w, "**Every one of the %s preset's %d cells has a run; %d of its %d runs done, and %d cells have all %d repetitions** (\"Runs per cell\" below gives each cell's count). A median over one run has no spread: its [min–max] is that run.", preset, c.Cells, c.RunsDone, c.Runs, c.Complete, c.Runs/c.Cells)
	}
	fmt.Fprintln(w, " Running the command again adds the rest (runs go repetition by repetition).")
	fmt.Fprintln(w)
}

func renderModes(w io.Writer, c *Config, t *Table) {
	fmt.Fprintln(w, "## Modes\n\n| mode | workload | consumer | strategy | transfer | replay | spec |\n|---|---|---|---|---|---|---|")
	for _, name := range t.Modes {
		m, ok := c.Mode(name)
		if !ok {
			fmt.Fprintf(w, "| %s | | | | | | (not in the configuration) |\n", name)
			continue
		}
		role := ""
		switch name {
		case c.Baseline:
			role = " (baseline)"
		case c.Reference:
			role = " (MS2M)"
		}
		s, tr, rp := m.Describe()
		fmt.Fprintf(w, "| `%s`%s | %s | %s | %s | %s | %s | `%s` |\n", name, role, m.Workload, m.describeConsumer(c.Run), s, tr, rp, m.SpecKey())
	}
	fmt.Fprintln(w)
}

// header writes a mode × rate table's head.
func header(w io.Writer, t *Table) {
	fmt.Fprint(w, "| mode | state |")
	for _, r := range t.Rates {
		fmt.Fprintf(w, " %d msg/s |", r)
	}
	fmt.Fprint(w, "\n|---|---|")
	fmt.Fprint(w, strings.Repeat("---|", len(t.Rates)))
	fmt.Fprintln(w)
}

func hasData(t *Table, col string) bool {
	for _, r := range t.All() {
		if _, ok := r.Value(col); ok {
			return true
		}
	}
	return false
}

func renderMetric(w io.Writer, t *Table, m metric) {
	renderCells(w, t, m.col, "### "+m.title, func(c Cell) string {
		runs, _, _ := t.Counts(c)
		return formatSummary(t.Summary(c, m.col), m.unit, runs)
	})
}

func renderRatios(w io.Writer, t *Table, m metric, baseline, reference string) {
	title := fmt.Sprintf("### %s: median, ÷ %s, ÷ %s", m.title, baseline, reference)
	renderCells(w, t, m.col, title, func(c Cell) string {
		s := t.Summary(c, m.col)
		if s.N == 0 {
			return "—"
		}
		return fmt.Sprintf("%s, %s, %s", m.unit.format(s.Median),
			formatRatio(t.Ratio(c, m.col, baseline)), formatRatio(t.Ratio(c, m.col, reference)))
	})
}

// renderCells writes a state × mode by rate table of col under title, one
// cell as format gives it, or nothing when no run recorded col (col "":
// always).
func renderCells(w io.Writer, t *Table, col, title string, format func(Cell) string) {
	if col != "" && !hasData(t, col) {
		return
	}
	fmt.Fprintf(w, "%s\n\n", title)
	header(w, t)
	for _, st := range t.States {
		for _, mode := range t.Modes {
			fmt.Fprintf(w, "| `%s` | %s |", mode, st)
			for _, rate := range t.Rates {
				fmt.Fprintf(w, " %s |", format(Cell{mode, rate, st}))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
}

// closestRate is the matrix's rate nearest to want.
func closestRate(t *Table, want int) (int, bool) {
	best, ok := 0, false
	for _, r := range t.Rates {
		if !ok || abs(r-want) < abs(best-want) {
			best, ok = r, true
		}
	}
	return best, ok
}

func abs(x int) int { return max(x, -x) }

func renderPhases(w io.Writer, t *Table) {
	rate, ok := closestRate(t, PhaseRate)
	if !ok {
		return
	}
	fmt.Fprintf(w, "## Phases at %d msg/s\n\nMedian time per phase (share of the median total).\n\n| mode | state |", rate)
	for _, p := range v1alpha1.Phases {
		fmt.Fprintf(w, " %s |", p)
	}
	fmt.Fprintf(w, " total |\n|---|---|%s---|\n", strings.Repeat("---|", len(v1alpha1.Phases)))
	for _, st := range t.States {
		for _, mode := range t.Modes {
			c := Cell{mode, rate, st}
			total := t.Summary(c, ColTotal)
			if total.N == 0 {
				continue
			}
			fmt.Fprintf(w, "| `%s` | %s |", mode, st)
			for _, p := range v1alpha1.Phases {
				s := t.Summary(c, PhaseColumn(p))
				if s.N == 0 {
					fmt.Fprint(w, " — |")
					continue
				}
				fmt.Fprintf(w, " %s (%.0f%%) |", unitMS.format(s.Median), 100*s.Median/total.Median)
			}
			fmt.Fprintf(w, " %s |\n", unitMS.format(total.Median))
		}
	}
	fmt.Fprintln(w)
}

func renderCorrectness(w io.Writer, t *Table) {
	fmt.Fprintln(w, "## Correctness\n\nPer mode, over all its runs: exactly-once holds when the serving pod's digest equals the producer's reference with nothing lost or applied twice — the target's after a completed migration; after a failed one, the source's if it rolled back, the target's if it failed forward past the point of no return. A workload without the SDK (consumer `protocol`) is promised at least once: it counts as correct when it saw every message, and its repeats are counted as duplicated.\n\n| mode | runs | completed, exactly-once | failed | failed, stream still exactly-once | lost | duplicated | digest mismatches |\n|---|---|---|---|---|---|---|---|")
	for _, mode := range t.Modes {
		var runs, failed, verified, intact, mismatches int
		var lost, dup float64
		for _, r := range t.All() {
			if r.Mode != mode {
				continue
			}
			runs++
			if r.Failed() {
				failed++
			}
			if r.Digest == "mismatch" {
				mismatches++
			}
			lost += r.Values[ColLost]
			dup += r.Values[ColDuplicated]
			if r.Verified() {
				verified++
			}
			if r.StreamIntact() {
				intact++
			}
		}
		fmt.Fprintf(w, "| `%s` | %d | %d | %d | %d | %.0f | %.0f | %d |\n", mode, runs, verified, failed, intact, lost, dup, mismatches)
	}
	fmt.Fprintln(w)
}

// renderRunCounts tables the runs of each cell when they differ or the
// preset is not done, so a median's footing is visible next to it.
func renderRunCounts(w io.Writer, t *Table, partial bool) {
	counts := map[int]bool{}
	for _, st := range t.States {
		for _, rate := range t.Rates {
			for _, mode := range t.Modes {
				runs, _, _ := t.Counts(Cell{mode, rate, st})
				counts[runs] = true
			}
		}
	}
	if len(counts) < 2 && !partial {
		return
	}
	renderCells(w, t, "", "## Runs per cell\n\nRuns recorded, failed ones included.", func(c Cell) string {
		runs, failed, _ := t.Counts(c)
		if failed > 0 {
			return fmt.Sprintf("%d (%d failed)", runs, failed)
		}
		return fmt.Sprint(runs)
	})
}

func renderFailures(w io.Writer, t *Table) {
	var failed []Row
	for _, r := range t.All() {
		if r.Failed() {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		return
	}
	fmt.Fprintln(w, "## Failed runs\n\n| mode | rate | state | rep | phase | error |\n|---|---|---|---|---|---|")
	for _, r := range failed {
		msg := strings.ReplaceAll(r.Error, "|", "\\|")
		msg = strings.ReplaceAll(msg, "\n", " ")
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		fmt.Fprintf(w, "| `%s` | %d | %s | %d | %s | %s |\n", r.Mode, r.Rate, r.State, r.Rep, orDash(r.Phase), msg)
	}
	fmt.Fprintln(w)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
