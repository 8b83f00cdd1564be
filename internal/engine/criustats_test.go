package engine

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// statsImage writes a stats-dump as CRIU 4.2 does: service magic, stats
// magic, one length-prefixed stats_entry whose dump field holds the
// numbers (an unknown field among them, as a newer CRIU may add).
func statsImage(t *testing.T, magic uint32, fields map[protowire.Number]uint64) string {
	t.Helper()
	var dump []byte
	for _, n := range []protowire.Number{1, 2, 3, 4, 5, 6, 7, 9, 15} {
		if v, ok := fields[n]; ok {
			dump = protowire.AppendTag(dump, n, protowire.VarintType)
			dump = protowire.AppendVarint(dump, v)
		}
	}
	dump = protowire.AppendTag(dump, 16, protowire.BytesType)
	dump = protowire.AppendBytes(dump, []byte("future"))
	entry := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry = protowire.AppendBytes(entry, dump)
	b := binary.LittleEndian.AppendUint32(nil, imgServiceMagic)
	b = binary.LittleEndian.AppendUint32(b, magic)
	b = appendRecord(b, entry)
	p := filepath.Join(t.TempDir(), "stats-dump")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadDumpStats(t *testing.T) {
	p := statsImage(t, statsMagic, map[protowire.Number]uint64{1: 1500, 2: 412000, 3: 250000, 4: 120000, 5: 131072, 7: 131000, 9: 7, 15: 99})
	s, err := ReadDumpStats(p)
	if err != nil {
		t.Fatal(err)
	}
	want := DumpStats{Freezing: 1500 * time.Microsecond, Frozen: 412 * time.Millisecond, MemDump: 250 * time.Millisecond,
		MemWrite: 120 * time.Millisecond, PagesWritten: 131000, PagesLazy: 7}
	if s != want {
		t.Fatalf("read %+v, want %+v", s, want)
	}
	if !strings.Contains(s.String(), "frozen 412ms") {
		t.Errorf("String() = %q", s)
	}

	if _, err := ReadDumpStats(statsImage(t, 0x12345678, map[protowire.Number]uint64{2: 1})); err == nil || !strings.Contains(err.Error(), "not a CRIU stats image") {
		t.Errorf("another image's magic: %v", err)
	}
	noDump := filepath.Join(t.TempDir(), "stats-restore")
	b := binary.LittleEndian.AppendUint32(nil, imgServiceMagic)
	b = binary.LittleEndian.AppendUint32(b, statsMagic)
	b = appendRecord(b, protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), nil))
	if err := os.WriteFile(noDump, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDumpStats(noDump); err == nil || !strings.Contains(err.Error(), "no dump statistics") {
		t.Errorf("restore statistics read as a dump's: %v", err)
	}
}

func TestStepsString(t *testing.T) {
	var s Steps
	_ = s.Time("pause", func() error { return nil })
	s[0].Took = 31 * time.Millisecond
	s = append(s, Step{"dump", 412400 * time.Microsecond})
	if got := s.String(); got != "pause 31ms, dump 412ms" {
		t.Fatalf("%q", got)
	}
}
