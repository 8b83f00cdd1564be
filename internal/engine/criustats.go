package engine

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Magics of CRIU's stats image (criu/include/magic.h): a service image.
const (
	imgServiceMagic = 0x55105940
	statsMagic      = 0x57093306
)

// DumpStats is what CRIU measured of one dump (stats-dump, which it
// writes into its work directory): how long the tasks took to freeze,
// how long they stayed frozen, and how long their memory took to collect
// and to write. The agent's own Freeze is longer: it also counts the
// container runtime's pause and resume and the copy of the file system's
// changes.
type DumpStats struct {
	Freezing, Frozen, MemDump, MemWrite time.Duration
	PagesWritten, PagesLazy             uint64
}

func (s DumpStats) String() string {
	return fmt.Sprintf("CRIU: freezing %s, frozen %s (memory %s collected, %s written), %d pages written, %d lazy",
		s.Freezing.Round(time.Millisecond), s.Frozen.Round(time.Millisecond), s.MemDump.Round(time.Millisecond),
		s.MemWrite.Round(time.Millisecond), s.PagesWritten, s.PagesLazy)
}

// ReadDumpStats reads CRIU's stats-dump image.
func ReadDumpStats(path string) (DumpStats, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return DumpStats{}, err
	}
	magic, records, err := splitImage(b)
	if err != nil {
		return DumpStats{}, fmt.Errorf("%s: %w", path, err)
	}
	if binary.LittleEndian.Uint32(magic) != imgServiceMagic || binary.LittleEndian.Uint32(magic[4:]) != statsMagic {
		return DumpStats{}, fmt.Errorf("%s is not a CRIU stats image (magic %x)", path, magic)
	}
	if len(records) != 1 {
		return DumpStats{}, fmt.Errorf("%s holds %d records, not one", path, len(records))
	}
	// stats_entry (images/stats.proto): dump = 1.
	var dump []byte
	err = eachField(records[0], func(num protowire.Number, typ protowire.Type, value, _ []byte) error {
		if num == 1 && typ == protowire.BytesType {
			dump, _ = protowire.ConsumeBytes(value)
		}
		return nil
	})
	if err != nil {
		return DumpStats{}, fmt.Errorf("%s: %w", path, err)
	}
	if dump == nil {
		return DumpStats{}, fmt.Errorf("%s holds no dump statistics", path)
	}
	var s DumpStats
	us := func(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }
	// dump_stats_entry: times in microseconds.
	err = eachField(dump, func(num protowire.Number, typ protowire.Type, value, _ []byte) error {
		if typ != protowire.VarintType {
			return nil
		}
		v := varint(value)
		switch num {
		case 1:
			s.Freezing = us(v)
		case 2:
			s.Frozen = us(v)
		case 3:
			s.MemDump = us(v)
		case 4:
			s.MemWrite = us(v)
		case 7:
			s.PagesWritten = v
		case 9:
			s.PagesLazy = v
		}
		return nil
	})
	return s, err
}
