package bench

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Columns that are not numbers; every other column is a metric.
var (
	leadColumns  = []string{"mode", "workload", "strategy", "transfer", "replay", "spec", "rate", "state", "rep", "started", "phase"}
	trailColumns = []string{"digest", "error"}
)

// Header is the CSV header for rows: the known metric columns, then any
// other metric the rows carry (a CSV written by another version keeps its
// columns through a rewrite).
func Header(rows []Row) []string {
	metrics := MetricColumns()
	var extra []string
	for _, r := range rows {
		for k := range r.Values {
			if !slices.Contains(metrics, k) && !slices.Contains(extra, k) {
				extra = append(extra, k)
			}
		}
	}
	slices.Sort(extra)
	h := append(slices.Clone(leadColumns), metrics...)
	h = append(h, extra...)
	return append(h, trailColumns...)
}

func (r Row) record(header []string) []string {
	rec := make([]string, len(header))
	for i, col := range header {
		switch col {
		case "mode":
			rec[i] = r.Mode
		case "workload":
			rec[i] = r.Workload
		case "strategy":
			rec[i] = r.Strategy
		case "transfer":
			rec[i] = r.Transfer
		case "replay":
			rec[i] = r.Replay
		case "spec":
			rec[i] = r.Spec
		case "rate":
			rec[i] = strconv.Itoa(r.Rate)
		case "state":
			rec[i] = r.State
		case "rep":
			rec[i] = strconv.Itoa(r.Rep)
		case "started":
			if !r.Started.IsZero() {
				rec[i] = r.Started.UTC().Format(time.RFC3339)
			}
		case "phase":
			rec[i] = r.Phase
		case "digest":
			rec[i] = r.Digest
		case "error":
			rec[i] = r.Error
		default:
			if v, ok := r.Values[col]; ok && !math.IsNaN(v) {
				rec[i] = strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
	}
	return rec
}

func parseRecord(header, rec []string) (Row, error) {
	var r Row
	for i, col := range header {
		v := rec[i]
		var err error
		switch col {
		case "mode":
			r.Mode = v
		case "workload":
			r.Workload = v
		case "strategy":
			r.Strategy = v
		case "transfer":
			r.Transfer = v
		case "replay":
			r.Replay = v
		case "spec":
			r.Spec = v
		case "rate":
			r.Rate, err = strconv.Atoi(v)
		case "state":
			r.State = v
		case "rep":
			r.Rep, err = strconv.Atoi(v)
		case "started":
			if v != "" {
				r.Started, err = time.Parse(time.RFC3339, v)
			}
		case "phase":
			r.Phase = v
		case "digest":
			r.Digest = v
		case "error":
			r.Error = v
		default:
			if v != "" {
				var f float64
				if f, err = strconv.ParseFloat(v, 64); err == nil {
					r.set(col, f)
				}
			}
		}
		if err != nil {
			return r, fmt.Errorf("column %s: %w", col, err)
		}
	}
	return r, nil
}

// WriteCSV writes a header and the rows.
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	h := Header(rows)
	if err := cw.Write(h); err != nil {
		return err
	}
	for _, r := range rows {
		if err := cw.Write(r.record(h)); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// ReadCSV reads rows by their header's column names, so that a column
// added or moved by another version does not shift the others.
func ReadCSV(rd io.Reader) ([]Row, error) {
	cr := csv.NewReader(rd)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, need := range []string{"mode", "rate", "state", "rep"} {
		if !slices.Contains(header, need) {
			return nil, fmt.Errorf("not a bench CSV: no %q column", need)
		}
	}
	var rows []Row
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		r, err := parseRecord(header, rec)
		if err != nil {
			return rows, fmt.Errorf("line %d: %w", line, err)
		}
		rows = append(rows, r)
	}
}

// ReadCSVFile reads path; a missing file holds no rows.
func ReadCSVFile(path string) ([]Row, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := ReadCSV(f)
	if err != nil {
		return rows, fmt.Errorf("%s: %w", path, err)
	}
	return rows, nil
}

// WriteCSVFile replaces path atomically: an interrupted write never
// leaves a half file behind to resume from.
func WriteCSVFile(path string, rows []Row) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".results-*.csv")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := WriteCSV(tmp, rows); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
