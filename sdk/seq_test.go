package sdk

import (
	"math"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestSeqOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v       any
		want    int64
		wantErr bool
	}{
		{"int64", int64(1 << 40), 1 << 40, false},
		{"int32", int32(7), 7, false},
		{"int16", int16(300), 300, false},
		{"int8", int8(5), 5, false},
		{"uint8", uint8(200), 200, false},
		{"uint16", uint16(60000), 60000, false},
		{"uint32", uint32(4000000000), 4000000000, false},
		{"uint64", uint64(9), 9, false},
		{"int", 12, 12, false},
		{"uint64 overflow", uint64(math.MaxUint64), 0, true},
		{"zero", int64(0), 0, true},
		{"negative", int32(-3), 0, true},
		{"string", "5", 0, true},
		{"float", 5.0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, ok, err := SeqOf(amqp.Table{SeqHeader: tc.v})
			if !ok {
				t.Fatal("present header reported absent")
			}
			if (err != nil) != tc.wantErr || (err == nil && seq != tc.want) {
				t.Fatalf("SeqOf(%T %v) = %d, %v", tc.v, tc.v, seq, err)
			}
		})
	}
	if _, ok, err := SeqOf(amqp.Table{"other": int64(1)}); ok || err != nil {
		t.Fatalf("absent header: ok=%v err=%v", ok, err)
	}
	if _, ok, err := SeqOf(nil); ok || err != nil {
		t.Fatalf("nil headers: ok=%v err=%v", ok, err)
	}
}
