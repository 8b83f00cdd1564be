package migration

import (
	"strings"
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
)

func TestResolveRestorePath(t *testing.T) {
	handler := agentapi.RestoreCapabilities{Runtime: "containerd 2.4.2", CheckpointImageReason: "containerd 2.4.2 no longer restores checkpoint images",
		RuntimeHandler: "ms2m", RuntimeHandlerReason: "runtime handler ms2m restores checkpoints staged in /x"}
	old := agentapi.RestoreCapabilities{Runtime: "containerd 2.1.9", CheckpointImage: true, CheckpointImageReason: "containerd 2.1.9 restores checkpoint images",
		RuntimeHandlerReason: "ms2m's runtime handler is not installed on this node"}
	both := old
	both.RuntimeHandler, both.RuntimeHandlerReason = "ms2m", "runtime handler ms2m"
	none := handler
	none.RuntimeHandler, none.RuntimeHandlerReason = "", "ms2m's runtime handler is not installed on this node"
	cases := []struct {
		name       string
		caps       agentapi.RestoreCapabilities
		rc, srcRC  string
		want       v1alpha1.RestorePath
		failSubstr string
	}{
		{"containerd 2.4 with the handler", handler, "ms2m", "", v1alpha1.RestoreRuntimeHandler, ""},
		{"the handler wins where both work", both, "ms2m", "", v1alpha1.RestoreRuntimeHandler, ""},
		{"containerd 2.1 without the handler", old, "ms2m", "", v1alpha1.RestoreCheckpointImage, ""},
		{"handler without a RuntimeClass falls back", both, "", "", v1alpha1.RestoreCheckpointImage, ""},
		{"containerd 2.4 without the handler", none, "ms2m", "", "", "no longer restores"},
		{"handler but no RuntimeClass on 2.4", handler, "", "", "", "no RuntimeClass"},
		{"a source restored before by ms2m", handler, "ms2m", "ms2m", v1alpha1.RestoreRuntimeHandler, ""},
		{"a gVisor source", handler, "ms2m", "gvisor", "", "RuntimeClass \"gvisor\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why, fail := ResolveRestorePath("node-b", c.caps, c.rc, c.srcRC)
			if got != c.want {
				t.Fatalf("path %q (why %q, fail %q), want %q", got, why, fail, c.want)
			}
			if c.failSubstr != "" && !strings.Contains(fail, c.failSubstr) {
				t.Fatalf("refusal %q does not say %q", fail, c.failSubstr)
			}
			if c.want != "" && (why == "" || fail != "") {
				t.Fatalf("chosen %s without a reason (%q) or with a refusal (%q)", got, why, fail)
			}
		})
	}
}
