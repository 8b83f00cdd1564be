package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// view shows a followed migration: redrawn in place with progress bars on
// a terminal, one plain line per change elsewhere (a log, a pipe), or the
// object itself (-o json|yaml).
type view interface {
	show(m *v1alpha1.StatefulMigration, now time.Time)
	// end shows the migration as it ended (or as it is, unfollowed).
	end(m *v1alpha1.StatefulMigration, now time.Time)
}

func newView(out io.Writer, format string, follow bool) (view, error) {
	switch format {
	case "json", "yaml":
		return &objectView{out: out, format: format}, nil
	case "", "text":
	default:
		return nil, fmt.Errorf("unknown output format %q: use json or yaml, or leave -o out", format)
	}
	if f, ok := out.(*os.File); ok && follow && term.IsTerminal(int(f.Fd())) {
		width, _, err := term.GetSize(int(f.Fd()))
		if err != nil || width < 40 {
			width = 80
		}
		return &liveView{out: out, width: width}, nil
	}
	return &lineView{out: out}, nil
}

// liveView redraws the phases and a progress bar in place.
type liveView struct {
	out   io.Writer
	width int
	lines int
}

func (v *liveView) show(m *v1alpha1.StatefulMigration, now time.Time) {
	v.draw(Frame(m, now, v.width))
}

func (v *liveView) end(m *v1alpha1.StatefulMigration, now time.Time) {
	v.draw("")
	fmt.Fprint(v.out, Render(m, now))
}

func (v *liveView) draw(text string) {
	if v.lines > 0 {
		// up to the frame's first line, and clear to the end of screen
		fmt.Fprintf(v.out, "\x1b[%dA\r\x1b[J", v.lines)
	}
	fmt.Fprint(v.out, text)
	v.lines = strings.Count(text, "\n")
}

// lineView prints one line each time what it would say changes.
type lineView struct {
	out  io.Writer
	last string
}

func (v *lineView) show(m *v1alpha1.StatefulMigration, now time.Time) {
	if l := Line(m); l != v.last {
		fmt.Fprintf(v.out, "%s %s\n", now.Format("15:04:05"), l)
		v.last = l
	}
}

func (v *lineView) end(m *v1alpha1.StatefulMigration, now time.Time) {
	if v.last != "" {
		fmt.Fprintln(v.out)
	}
	fmt.Fprint(v.out, Render(m, now))
}

// objectView prints the object on each change (a stream of documents).
type objectView struct {
	out    io.Writer
	format string
	last   string
}

func (v *objectView) show(m *v1alpha1.StatefulMigration, _ time.Time) {
	var b []byte
	var err error
	if v.format == "json" {
		b, err = json.MarshalIndent(m, "", "  ")
		b = append(b, '\n')
	} else {
		b, err = yaml.Marshal(m)
		b = append([]byte("---\n"), b...)
	}
	if err != nil || string(b) == v.last {
		return
	}
	v.last = string(b)
	_, _ = v.out.Write(b)
}

func (v *objectView) end(m *v1alpha1.StatefulMigration, now time.Time) { v.show(m, now) }

// Line is a migration's state in one line: phase, and the progress of
// what the phase moves.
func Line(m *v1alpha1.StatefulMigration) string {
	st := &m.Status
	phase := string(st.Phase)
	if phase == "" {
		phase = "(not yet picked up)"
	}
	l := fmt.Sprintf("%s/%s %s", m.Namespace, m.Name, phase)
	if q := queuedMessage(st); q != "" {
		return l + ", queued: " + q
	}
	if p := progressText(st); p != "" {
		l += ": " + p
	}
	return l
}

// progressText says how far the current phase's work has come.
func progressText(st *v1alpha1.StatefulMigrationStatus) string {
	switch st.Phase {
	case v1alpha1.PhaseTransferring:
		if t := st.Transfer; t != nil && t.BytesTotal > 0 {
			s := fmt.Sprintf("%s of %s (%d%%)", bytes(t.BytesTransferred), bytes(t.BytesTotal), 100*t.BytesTransferred/t.BytesTotal)
			if t.RateBytesPerSecond > 0 {
				eta := time.Duration(t.ETASeconds) * time.Second
				if eta == 0 {
					eta = (time.Duration(t.BytesRemaining) * time.Second / time.Duration(t.RateBytesPerSecond)).Round(time.Second)
				}
				s += fmt.Sprintf(" at %s/s, %s left, ETA %s", bytes(t.RateBytesPerSecond), bytes(t.BytesRemaining), eta)
			}
			return s
		}
	case v1alpha1.PhaseReplaying, v1alpha1.PhaseFinalizing:
		if msg := st.Messages; msg != nil && msg.Buffered > 0 {
			return fmt.Sprintf("%d of %d buffered message(s) replayed, %d remaining", replayed(msg), msg.Buffered, msg.Remaining)
		}
	case v1alpha1.PhaseCheckpointing:
		if ck := st.Checkpoint; ck != nil && ck.SizeBytes > 0 {
			return "checkpoint of " + bytes(ck.SizeBytes) + " taken"
		}
	}
	return ""
}

// Frame is the live view of a migration: each phase with its time, the
// current one with a bar of its progress.
func Frame(m *v1alpha1.StatefulMigration, now time.Time, width int) string {
	st := &m.Status
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s  %s -> %s", m.Namespace, m.Name, orDash(st.SourceNode), orDash(st.TargetNode))
	if st.Plan.Strategy != "" {
		fmt.Fprintf(&b, "  %s, %s", st.Plan.Strategy, st.Plan.MemoryTechnique)
	}
	b.WriteString("\n")
	if q := queuedMessage(st); q != "" {
		fmt.Fprintf(&b, "  queued: %s\n", q)
	}
	timings := map[v1alpha1.Phase]v1alpha1.PhaseTiming{}
	for _, pt := range st.PhaseTimings {
		timings[pt.Phase] = pt
	}
	for _, p := range v1alpha1.Phases {
		pt, seen := timings[p]
		switch {
		case !seen:
			fmt.Fprintf(&b, "  . %s\n", p)
		case pt.Duration != nil:
			fmt.Fprintf(&b, "  v %-14s %s\n", p, fmtDuration(pt.Duration.Duration))
		default:
			fmt.Fprintf(&b, "  > %-14s %s\n", p, fmtDuration(now.Sub(pt.Start.Time)))
			if bar := phaseBar(st, width-6); bar != "" {
				fmt.Fprintf(&b, "    %s\n", bar)
			}
			if p := progressText(st); p != "" {
				fmt.Fprintf(&b, "    %s\n", p)
			}
		}
	}
	return b.String()
}

// phaseBar is the current phase's progress as a bar, when it has a measure.
func phaseBar(st *v1alpha1.StatefulMigrationStatus, width int) string {
	done, total := int64(0), int64(0)
	switch st.Phase {
	case v1alpha1.PhaseTransferring:
		if t := st.Transfer; t != nil {
			done, total = t.BytesTransferred, t.BytesTotal
		}
	case v1alpha1.PhaseReplaying, v1alpha1.PhaseFinalizing:
		if msg := st.Messages; msg != nil {
			done, total = replayed(msg), msg.Buffered
		}
	}
	if total <= 0 {
		return ""
	}
	return bar(done, total, width)
}

func bar(done, total int64, width int) string {
	width = max(width-7, 10)
	filled := int(min(done, total) * int64(width) / total)
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + "] " + fmt.Sprintf("%3d%%", 100*min(done, total)/total)
}

func queuedMessage(st *v1alpha1.StatefulMigrationStatus) string {
	for _, c := range st.Conditions {
		if c.Type == v1alpha1.ConditionQueued && c.Status == "True" && st.Phase == v1alpha1.PhasePending {
			return c.Message
		}
	}
	return ""
}

// replayed is how much of the buffer the target has taken: what it
// reported, or what has left the replay queue.
func replayed(msg *v1alpha1.MessageStatus) int64 {
	return max(msg.Replayed, msg.Buffered-msg.Remaining, 0)
}
