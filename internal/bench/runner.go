package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/demo"
)

// Namespace the bench's consumers run in; it is reset before every run.
const Namespace = "ms2m-bench"

// Lab is what a run needs of the lab.
type Lab struct {
	Client                 client.Client
	AMQPURL, ManagementURL string
	ConsumerImage          string
	ProtocolConsumerImage  string
	SourceNode, TargetNode string
	// BetweenRuns, if set, runs after each run (the lab's registry garbage
	// collection: a 512 MiB checkpoint would otherwise stay on disk).
	BetweenRuns func(context.Context) error
}

// Runner runs one migration per Run with internal/demo, which measures it
// from outside as `make demo` does, and records it as a Row.
type Runner struct {
	Lab      Lab
	Settings RunSettings
	Meter    Meter
	// Log receives each run's narrative and report.
	Log io.Writer
}

// Do runs one migration. A failed run is a row with Error set; only a
// cancelled context yields no row worth keeping (Interrupted).
func (r *Runner) Do(ctx context.Context, run Run) Row {
	row := newRow(run)
	spec, err := run.Mode.MigrationSpec()
	if err != nil {
		row.Error = err.Error()
		return row
	}
	spec.TargetNode = r.Lab.TargetNode
	fmt.Fprintf(r.Log, "\n=== %s (%s)\n", run, row.Started.Format(time.RFC3339))
	stop, err := r.Meter.Start(ctx)
	if err != nil {
		fmt.Fprintf(r.Log, "process accounting off: %v\n", err)
	}
	s := r.Settings
	res, err := demo.Run(ctx, demo.Options{
		Client: r.Lab.Client, AMQPURL: r.Lab.AMQPURL, ManagementURL: r.Lab.ManagementURL, Exchange: "ms2m.bench",
		Workload: run.Mode.workload(r.Lab, s, run.State),
		Spec:     spec, Rate: run.Rate, Warmup: s.Warmup.Duration, Settle: s.Settle.Duration, Timeout: s.Timeout.Duration,
		Out: r.Log,
	})
	row.setDuration(ColWall, time.Since(row.Started))
	defer func() {
		if r.Lab.BetweenRuns == nil {
			return
		}
		if err := r.Lab.BetweenRuns(ctx); err != nil {
			fmt.Fprintf(r.Log, "between runs: %v\n", err)
		}
	}()
	if err != nil {
		row.Error = err.Error()
		fmt.Fprintf(r.Log, "run failed: %v\n", err)
	}
	if res != nil {
		// The serving pod's state was checked (the target's, or the
		// source's after a rollback) when the demo got its digest.
		fromResult(&row, res, res.Digest != "" || res.AtLeastOnce)
		if res.Migration != nil && res.Migration.Status.Phase.IsFinal() {
			demo.Report(r.Log, res)
		}
	}
	if stop != nil {
		u := stop()
		if !u.PeakReset {
			fmt.Fprintln(r.Log, "peak RSS not recorded: the kernel would not reset it (needs root), so it would cover earlier runs")
		}
		if len(u.Lost) > 0 {
			fmt.Fprintf(r.Log, "processes restarted during the run, not measured: %v\n", u.Lost)
		}
		fromUsage(&row, u, res, map[string]string{
			RoleManager: RoleManager, AgentRole(r.Lab.SourceNode): RoleSourceAgent, AgentRole(r.Lab.TargetNode): RoleTargetAgent})
	}
	return row
}

func newRow(run Run) Row {
	strategy, transfer, replay := run.Mode.Describe()
	return Row{Mode: run.Mode.Name, Workload: run.Mode.Workload, Strategy: strategy, Transfer: transfer, Replay: replay,
		Spec: run.Mode.SpecKey(), Rate: run.Rate, State: run.State, Rep: run.Rep, Started: time.Now()}
}

// fromResult copies what the migration's status and the outside probes
// measured; verified says whether the serving pod's state was checked
// against the producer's reference.
func fromResult(row *Row, res *demo.Result, verified bool) {
	if m := res.Migration; m != nil {
		st := &m.Status
		row.Phase = string(st.Phase)
		setDur(row, ColTotal, st.TotalDuration)
		for _, pt := range st.PhaseTimings {
			setDur(row, PhaseColumn(pt.Phase), pt.Duration)
		}
		if ck := st.Checkpoint; ck != nil {
			if ck.SizeBytes > 0 {
				row.set(ColCheckpointBytes, float64(ck.SizeBytes))
			}
			setDur(row, ColFreeze, ck.FreezeDuration)
		}
		if tr := st.Transfer; tr != nil && tr.BytesTransferred > 0 {
			row.set(ColBytesMoved, float64(tr.BytesTransferred+tr.PageBytes))
		}
		if msgs := st.Messages; msgs != nil {
			row.set(ColBuffered, float64(msgs.Buffered))
			row.set(ColReplayed, float64(msgs.Replayed))
		}
		if d := st.Downtime; d != nil {
			setDur(row, ColUnavailable, d.Unavailable)
			setDur(row, ColHandoffGap, d.HandoffGap)
		}
	}
	if mm := res.Measures; mm.Probes > 0 {
		row.setDuration(ColDowntime, mm.Downtime)
		row.setDuration(ColStall, mm.MaxStall)
		row.setDuration(ColGap, mm.MaxGap)
	}
	if res.Published > 0 {
		row.set(ColPublished, float64(res.Published))
	}
	if verified {
		row.set(ColApplied, float64(res.Applied))
		row.set(ColLost, float64(res.Lost))
		row.set(ColDuplicated, float64(res.Duplicated))
		row.Digest = "mismatch"
		switch {
		case res.AtLeastOnce:
			row.Digest = DigestNone
		case res.DigestMatch:
			row.Digest = "match"
		}
	}
}

func setDur(row *Row, col string, d *metav1.Duration) {
	if d != nil {
		row.setDuration(col, d.Duration)
	}
}

// fromUsage records CPU over the migration's own window, from its first
// phase's start to its last phase's end, and the run's peak RSS; roles maps
// the meter's roles to the row's.
func fromUsage(row *Row, u Usage, res *demo.Result, roles map[string]string) {
	from, to, ok := window(res)
	for meterRole, col := range roles {
		if ok {
			if cpu, ok := CPUBetween(u.Samples, meterRole, from, to); ok {
				row.set(CPUColumn(col), math.Round(cpu*userHZ)/userHZ) // whole ticks: no float noise in the CSV
			}
		}
		if rss, ok := u.PeakRSS[meterRole]; ok && u.PeakReset {
			row.set(RSSColumn(col), float64(rss))
		}
	}
}

func window(res *demo.Result) (from, to time.Time, ok bool) {
	if res == nil || res.Migration == nil {
		return from, to, false
	}
	for _, pt := range res.Migration.Status.PhaseTimings {
		if from.IsZero() || pt.Start.Time.Before(from) {
			from = pt.Start.Time
		}
		if pt.End != nil && pt.End.Time.After(to) {
			to = pt.End.Time
		}
	}
	return from, to, !from.IsZero() && !to.IsZero()
}

// Cleanup removes the bench's namespace: consumers, migrations, services.
func (r *Runner) Cleanup(ctx context.Context) error {
	err := r.Lab.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}})
	return client.IgnoreNotFound(err)
}
