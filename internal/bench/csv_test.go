package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleRows() []Row {
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	return []Row{
		{Mode: "ms2m", Workload: "Pod", Strategy: "ShadowPod", Transfer: "Registry", Replay: "Cutoff",
			Spec: `{"migrationStrategy":"ShadowPod","replayMode":"Cutoff"}`, Rate: 60, State: "1Mi", Rep: 2, Started: start,
			Phase: "Completed", Digest: "match",
			Values: map[string]float64{ColTotal: 5114.592, PhaseColumn("Replaying"): 419.868, ColDowntime: 0, ColCheckpointBytes: 5630464,
				CPUColumn(RoleManager): 0.16, ColLost: 0}},
		// a failure: an error with the characters CSV must quote, and
		// nothing measured
		{Mode: "cold", Workload: "StatefulSet", Spec: "{}", Rate: 120, State: "512Mi", Rep: 1, Started: start.Add(time.Minute),
			Error: "target \"consumer-0\" did not reach seq 9,001\nafter 2m"},
	}
}

func TestCSVRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCSV(&buf, sampleRows()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCSV(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleRows()
	want[1].Values = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
	// A zero is measured, an empty cell is not.
	if _, ok := got[0].Value(ColDowntime); !ok {
		t.Error("a downtime of 0 ms came back as unmeasured")
	}
	if _, ok := got[0].Value(ColStall); ok {
		t.Error("an unmeasured stall came back as a value")
	}
}

// Another version's CSV may order columns differently or carry more: rows
// are read by name and its columns survive a rewrite.
func TestCSVByColumnName(t *testing.T) {
	in := "rep,state,rate,mode,total_ms,postcopy_faults,phase\n3,64Mi,20,ms2m,812.5,44,Completed\n"
	rows, err := ReadCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	r := rows[0]
	if r.Mode != "ms2m" || r.Rate != 20 || r.State != "64Mi" || r.Rep != 3 || r.Values[ColTotal] != 812.5 || r.Values["postcopy_faults"] != 44 {
		t.Fatalf("row %+v", r)
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if h := strings.SplitN(buf.String(), "\n", 2)[0]; !strings.Contains(h, "postcopy_faults") {
		t.Fatalf("header %s lost a column", h)
	}
	if _, err := ReadCSV(strings.NewReader("a,b\n1,2\n")); err == nil {
		t.Fatal("a CSV without the bench's columns was read")
	}
}

func TestCSVFileIsReplacedWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), ResultsFile)
	if rows, err := ReadCSVFile(path); err != nil || rows != nil {
		t.Fatalf("missing file: %v %v", rows, err)
	}
	rows := sampleRows()
	for i := range rows {
		if err := WriteCSVFile(path, rows[:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadCSVFile(path)
	if err != nil || len(got) != 2 {
		t.Fatalf("%d rows, %v", len(got), err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
