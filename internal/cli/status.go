package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func newStatusCommand(e *env) *cobra.Command {
	var watch bool
	var output string
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a migration's phases, durations and progress",
		Long: `status shows a migration's plan, phases, durations and progress. With
--watch it follows the migration until it ends: on a terminal the phases
and a progress bar (bytes moved, rate and ETA while the checkpoint moves;
messages replayed while the stream is handed over) are redrawn in place,
elsewhere each change is a line; the summary follows at the end.`,
		Example: `  kubectl migrate status consumer-0-x7k2q
  kubectl migrate status consumer-0-x7k2q -w
  kubectl migrate status consumer-0-x7k2q -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.client()
			if err != nil {
				return err
			}
			return watchStatus(cmd.Context(), e, c, client.ObjectKey{Namespace: ns, Name: args[0]}, watch, output)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the migration until it ends")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml: the StatefulMigration itself (with -w, each time it changes)")
	return cmd
}

// watchStatus shows the migration, and with follow keeps showing it as it
// changes until it is Completed or Failed (failing then): redrawn in place
// with a progress bar on a terminal, a line per change elsewhere, or the
// object itself in format json or yaml.
func watchStatus(ctx context.Context, e *env, c client.Client, key client.ObjectKey, follow bool, format string) error {
	v, err := newView(e.out, format, follow)
	if err != nil {
		return err
	}
	for {
		m := &v1alpha1.StatefulMigration{}
		if err := c.Get(ctx, key, m); err != nil {
			return err
		}
		if !follow || m.Status.Phase.IsFinal() {
			v.end(m, e.now())
			if m.Status.Phase == v1alpha1.PhaseFailed {
				return fmt.Errorf("migration %s failed: %s", m.Name, m.Status.FailureReason)
			}
			return nil
		}
		v.show(m, e.now())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Render formats a migration's status for people.
func Render(m *v1alpha1.StatefulMigration, now time.Time) string {
	var b strings.Builder
	st := &m.Status
	phase := string(st.Phase)
	if phase == "" {
		phase = "(not yet picked up)"
	}
	fmt.Fprintf(&b, "Migration:  %s/%s\n", m.Namespace, m.Name)
	fmt.Fprintf(&b, "Phase:      %s\n", phase)
	fmt.Fprintf(&b, "Pod:        %s -> %s\n", m.Spec.SourcePod, orDash(st.TargetPod))
	fmt.Fprintf(&b, "Nodes:      %s -> %s", orDash(st.SourceNode), orDash(st.TargetNode))
	if st.TargetNodeReason != "" && m.Spec.TargetNode == "" {
		fmt.Fprintf(&b, " (%s)", st.TargetNodeReason)
	}
	fmt.Fprintln(&b)
	if q := queuedMessage(st); q != "" {
		fmt.Fprintf(&b, "Queued:     %s\n", q)
	}
	if st.Plan.Strategy != "" {
		renderPlan(&b, &st.Plan)
	}
	if len(st.PhaseTimings) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nPHASE\tDURATION\t")
		for _, pt := range st.PhaseTimings {
			d := "running " + fmtDuration(now.Sub(pt.Start.Time))
			if pt.Duration != nil {
				d = fmtDuration(pt.Duration.Duration)
			}
			fmt.Fprintf(tw, "%s\t%s\t\n", pt.Phase, d)
		}
		if st.TotalDuration != nil {
			fmt.Fprintf(tw, "Total\t%s\t\n", fmtDuration(st.TotalDuration.Duration))
		}
		_ = tw.Flush()
		fmt.Fprintln(&b)
	}
	progress(&b, st)
	if st.FailureReason != "" {
		fmt.Fprintf(&b, "Failure:    %s in %s: %s\n", st.FailureReason, st.FailedPhase, st.FailureMessage)
	}
	if a := st.Abort; a != nil {
		fmt.Fprintf(&b, "Abort:      %s %s\n", a.Outcome, a.Message)
	}
	return b.String()
}

func progress(w io.Writer, st *v1alpha1.StatefulMigrationStatus) {
	if ck := st.Checkpoint; ck != nil {
		fmt.Fprintf(w, "Checkpoint: %s", bytes(ck.SizeBytes))
		if ck.FreezeDuration != nil {
			fmt.Fprintf(w, ", source frozen %s", fmtDuration(ck.FreezeDuration.Duration))
		}
		if ck.Image != "" {
			fmt.Fprintf(w, ", image %s", ck.Image)
		}
		fmt.Fprintln(w)
	}
	if t := st.Transfer; t != nil && t.BytesTotal > 0 {
		fmt.Fprintf(w, "Transfer:   %s of %s (%d%%) at %s/s\n", bytes(t.BytesTransferred), bytes(t.BytesTotal), 100*t.BytesTransferred/t.BytesTotal, bytes(t.RateBytesPerSecond))
	}
	if msg := st.Messages; msg != nil {
		fmt.Fprintf(w, "Messages:   %d buffered, %d replayed, %d remaining\n", msg.Buffered, msg.Replayed, msg.Remaining)
	}
	if d := st.Downtime; d != nil {
		fmt.Fprintf(w, "Downtime:   unavailable %s, handoff gap %s\n", durOrDash(d.Unavailable), durOrDash(d.HandoffGap))
	}
}

func bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.String()
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return d.Round(10 * time.Millisecond).String()
}

func durOrDash(d *metav1.Duration) string {
	if d == nil {
		return "-"
	}
	return fmtDuration(d.Duration)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// onOff is "on" or "off" once the plan has decided ("" before).
func onOff(on bool, why string) string {
	switch {
	case why == "":
		return ""
	case on:
		return "on"
	}
	return "off"
}

func bandwidthLine(bytesPerSecond int64, why string) string {
	switch {
	case why == "":
		return ""
	case bytesPerSecond == 0:
		return "unbounded"
	}
	return bytes(bytesPerSecond) + "/s"
}

// containersLine names the pod's other containers by what becomes of
// them: dumped with the migrated one, or started fresh.
func containersLine(p *v1alpha1.MigrationPlan) string {
	var parts []string
	if len(p.CheckpointedContainers) > 0 {
		parts = append(parts, "with "+strings.Join(p.CheckpointedContainers, ", "))
	}
	if len(p.FreshContainers) > 0 {
		parts = append(parts, "fresh "+strings.Join(p.FreshContainers, ", "))
	}
	return strings.Join(parts, "; ")
}

// renderPlan lists every choice of the plan with its reason, one a line.
func renderPlan(b *strings.Builder, p *v1alpha1.MigrationPlan) {
	fmt.Fprintln(b, "Plan:")
	for _, c := range []struct{ what, choice, why string }{
		{"strategy", string(p.Strategy), p.StrategyReason},
		{"restore", string(p.RestorePath), p.RestorePathReason},
		{"checkpoint", string(p.CheckpointEngine), p.CheckpointEngineReason},
		{"memory", string(p.MemoryTechnique), p.MemoryTechniqueReason},
		{"transfer", string(p.TransferMode), p.TransferModeReason},
		{"handoff", string(p.Handoff), p.HandoffReason},
		{"replay", string(p.ReplayMode), p.ReplayModeReason},
		{"containers", containersLine(p), p.FreshContainersReason},
		{"encryption", onOff(p.EncryptCheckpoint, p.EncryptionReason), p.EncryptionReason},
		{"bandwidth", bandwidthLine(p.BandwidthBytesPerSecond, p.BandwidthReason), p.BandwidthReason},
		{"policy", policyName(p), ""},
		{"timeouts", timeoutsLine(p.Timeouts), p.TimeoutsReason},
	} {
		if c.choice == "" {
			continue
		}
		fmt.Fprintf(b, "  %-11s %s", c.what+":", c.choice)
		if c.why != "" {
			fmt.Fprintf(b, " (%s)", c.why)
		}
		fmt.Fprintln(b)
	}
}

func policyName(p *v1alpha1.MigrationPlan) string {
	if p.Policy == "" {
		return ""
	}
	return fmt.Sprintf("%s (generation %d)", p.Policy, p.PolicyGeneration)
}

func timeoutsLine(t *v1alpha1.MigrationTimeouts) string {
	if t == nil || t.Total == nil {
		return ""
	}
	return fmt.Sprintf("total %s, checkpoint %s, transfer %s, restore %s, replay %s, finalize %s",
		durOrDash(t.Total), durOrDash(t.Checkpoint), durOrDash(t.Transfer), durOrDash(t.Restore), durOrDash(t.Replay), durOrDash(t.Finalize))
}
