package probe

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	base := func() *Report {
		return &Report{
			Host: Host{PipeMaxSize: 1 << 20},
			CRIU: CRIU{Version: "4.2.1", Check: true, Features: map[string]bool{"uffd": true, "uffd-noncoop": true},
				RuncConfig: []string{"tcp-close", "skip-in-flight", "network-lock nftables"}},
		}
	}
	// This lab's VM: no soft-dirty, no CAP_SYS_RESOURCE, pipe size raised.
	r := base()
	r.Host.PipeMaxSize = 4 << 20
	got := Decide(r)
	if !got["stopAndCopy"].Available || !got["postCopy"].Available || got["preCopy"].Available || !got["tcpClose"].Available {
		t.Fatalf("VM report: %+v", got)
	}
	if !strings.Contains(got["preCopy"].Reason, "soft-dirty") {
		t.Fatalf("preCopy reason %q", got["preCopy"].Reason)
	}

	r = base()
	if got := Decide(r); got["postCopy"].Available || !strings.Contains(got["postCopy"].Reason, "pipe-max-size=1048576") {
		t.Fatalf("small pipes: %+v", got["postCopy"])
	}
	r.Host.CapSysResource = true
	if got := Decide(r); !got["postCopy"].Available {
		t.Fatalf("CAP_SYS_RESOURCE: %+v", got["postCopy"])
	}

	r = base()
	r.CRIU.Features["mem_dirty_track"] = true
	r.CRIU.RuncConfig = nil
	got = Decide(r)
	if !got["preCopy"].Available || got["tcpClose"].Available {
		t.Fatalf("soft-dirty host without runc.conf: %+v", got)
	}

	r = base()
	r.CRIU.Check = false
	r.CRIU.CheckOutput = "Error: vdso\nfailed"
	got = Decide(r)
	for _, k := range []string{"stopAndCopy", "postCopy", "preCopy", "tcpClose"} {
		if got[k].Available {
			t.Fatalf("%s available without a working criu", k)
		}
	}
	if got["stopAndCopy"].Reason != "criu check fails: failed" {
		t.Fatalf("reason %q", got["stopAndCopy"].Reason)
	}
}
