package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Files of a results directory.
const (
	ResultsFile = "results.csv"
	MetaFile    = "bench.json"
	ReportFile  = "report.md"
	LogFile     = "runs.log"
)

// Meta is what a results directory says about how it was made; the
// report is regenerated from it and the CSV alone.
type Meta struct {
	Command string    `json:"command"`
	Preset  string    `json:"preset"`
	Config  *Config   `json:"config"`
	Machine Machine   `json:"machine"`
	Commit  string    `json:"commit,omitempty"`
	Started time.Time `json:"started"`
	// Resumed lists the later sessions that added runs to the same
	// directory: a matrix of hours is often filled in several.
	Resumed []Session `json:"resumed,omitempty"`
}

// Session is one later start of the bench on a results directory.
type Session struct {
	Started time.Time `json:"started"`
	Commit  string    `json:"commit,omitempty"`
	Command string    `json:"command"`
	Machine Machine   `json:"machine"`
}

// recordSession writes bench.json for a session that starts on dir:
// afresh, or, when dir already holds runs, as a resumption of the session
// that made them (only if this one has runs to add).
func recordSession(dir string, next Meta, hasRows, hasTodo bool) error {
	if !hasRows {
		return WriteMeta(dir, next)
	}
	prev, err := ReadMeta(dir)
	if err != nil {
		return err
	}
	switch {
	case prev.Started.IsZero():
		return WriteMeta(dir, next)
	case hasTodo:
		return WriteMeta(dir, resume(prev, next))
	}
	return nil
}

// resume is the meta of a directory that already holds runs, now
// continued by next: the first session's description stays, next is added
// to its history, and next's configuration is the one that runs.
func resume(prev, next Meta) Meta {
	m := prev
	m.Config = next.Config
	m.Resumed = append(m.Resumed, Session{Started: next.Started, Commit: next.Commit, Command: next.Command, Machine: next.Machine})
	return m
}

// Doer runs one migration; Runner is the real one.
type Doer interface {
	Do(ctx context.Context, run Run) Row
}

// Options of Execute.
type Options struct {
	Dir         string
	Matrix      Matrix
	RetryFailed bool
	Meta        Meta
	// Progress gets a line per run.
	Progress io.Writer
}

// Execute runs what the results directory does not hold yet, writing the
// CSV after every run so that an interruption loses at most the run in
// progress, then the report.
func Execute(ctx context.Context, d Doer, o Options) error {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	csvPath := filepath.Join(o.Dir, ResultsFile)
	rows, err := ReadCSVFile(csvPath)
	if err != nil {
		return err
	}
	all := o.Matrix.Runs()
	todo := Pending(all, rows, o.RetryFailed)
	if err := recordSession(o.Dir, o.Meta, len(rows) > 0, len(todo) > 0); err != nil {
		return err
	}
	fmt.Fprintf(o.Progress, "%d runs in the matrix, %d already in %s, %d to run\n", len(all), len(all)-len(todo), csvPath, len(todo))
	var runErr error
	for i, run := range todo {
		t := time.Now()
		row := d.Do(ctx, run)
		if ctx.Err() != nil {
			runErr = ctx.Err()
			fmt.Fprintf(o.Progress, "[%d/%d] %s: interrupted, not recorded\n", i+1, len(todo), run)
			break
		}
		rows = append(rows, row)
		if err := WriteCSVFile(csvPath, rows); err != nil {
			return err
		}
		fmt.Fprintf(o.Progress, "[%d/%d] %s: %s (%.0fs)\n", i+1, len(todo), run, summaryLine(row), time.Since(t).Seconds())
	}
	if err := WriteReport(o.Dir); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

func summaryLine(r Row) string {
	v := func(col string) string {
		if x, ok := r.Value(col); ok {
			return fmt.Sprintf("%.0f", x)
		}
		return "-"
	}
	s := fmt.Sprintf("%s total=%sms downtime=%sms gap=%sms freeze=%sms digest=%s", r.Phase, v(ColTotal), v(ColDowntime), v(ColGap), v(ColFreeze), r.Digest)
	if r.Error != "" {
		s += " error: " + r.Error
	}
	return s
}

// WriteMeta stores how the results are made.
func WriteMeta(dir string, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, MetaFile), append(b, '\n'), 0o644)
}

// ReadMeta reads bench.json; without it the default config stands in.
func ReadMeta(dir string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if errors.Is(err, os.ErrNotExist) {
		m.Config, err = DefaultConfig()
		return m, err
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", MetaFile, err)
	}
	if m.Config == nil {
		m.Config, err = DefaultConfig()
	}
	return m, err
}
