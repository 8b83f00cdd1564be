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
	dump, err := field(records[0], 1)
	if err != nil {
		return DumpStats{}, fmt.Errorf("%s: %w", path, err)
	}
	if dump == nil {
		return DumpStats{}, fmt.Errorf("%s holds no dump statistics", path)
	}
	var s DumpStats
	us := func(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }
	// dump_stats_entry: times in microseconds.
	err = eachVarint(dump, func(num protowire.Number, v uint64) {
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
	})
	return s, err
}

// field is the bytes of message field num (nil: absent).
func field(msg []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			out, msg = v, msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return out, nil
}

// eachVarint calls f with every varint field of msg.
func eachVarint(msg []byte, f func(protowire.Number, uint64)) error {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return protowire.ParseError(l)
		}
		msg = msg[l:]
		if typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(msg)
			if l < 0 {
				return protowire.ParseError(l)
			}
			f(n, v)
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return nil
}
