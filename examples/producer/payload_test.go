package main

import (
	"encoding/json"
	"testing"
)

func TestPayload(t *testing.T) {
	for _, size := range []int{0, 5, 20, 1000} {
		p := payload(42, size)
		var v struct {
			Seq int64  `json:"seq"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(p, &v); err != nil || v.Seq != 42 {
			t.Fatalf("size %d: %s is not the message's JSON (%v)", size, p, err)
		}
		if size > 20 && len(p) != size {
			t.Fatalf("size %d: got %d bytes", size, len(p))
		}
	}
	if string(payload(7, 100)) != string(payload(7, 100)) || string(payload(7, 100)) == string(payload(8, 100)) {
		t.Fatal("payloads must be a function of seq and size")
	}
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"MS2M_RATE": "120", "MS2M_COUNT": "500", "MS2M_DECLARE": "true"}
	c, err := parseConfig([]string{"-payload-size", "256"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.rate != 120 || c.count != 500 || !c.declare || c.payloadSize != 256 || c.firstSeq != 1 || c.exchange != "ms2m.demo" {
		t.Fatalf("%+v", c)
	}
	for _, args := range [][]string{{"-first-seq", "0"}, {"-rate", "-1"}, {"-declare", "-exchange", ""}, {"-declare=maybe"}} {
		if _, err := parseConfig(args, func(string) string { return "" }); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
