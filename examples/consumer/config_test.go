package main

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4096": 4096, "64Mi": 64 << 20, "1Gi": 1 << 30, "512Ki": 512 << 10, "10M": 10e6, "2k": 2000} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "64MB", "Mi", "2Ti", "99999Gi"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestParseConfigEnvAndFlags(t *testing.T) {
	env := map[string]string{"MS2M_QUEUE": "q1", "MS2M_STATE_BYTES": "64Mi", "MS2M_PROCESSING_DELAY": "20ms", "MS2M_PREFETCH": "4"}
	c, err := parseConfig([]string{"-http-port", "9000"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.queue != "q1" || c.stateBytes != 64<<20 || c.delay != 20*time.Millisecond || c.prefetch != 4 || c.httpPort != 9000 {
		t.Fatalf("%+v", c)
	}
	if _, err := parseConfig([]string{"-prefetch", "0"}, func(string) string { return "" }); err == nil {
		t.Fatal("prefetch 0 accepted")
	}
}
