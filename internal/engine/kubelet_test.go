package engine_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/internal/engine"
)

// The agent calls its kubelet's checkpoint API itself, as its
// ServiceAccount, over TLS it verifies.
func TestKubeletDirect(t *testing.T) {
	var got *http.Request
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		if r.Header.Get("Authorization") != "Bearer agent-token" {
			http.Error(w, "Forbidden (user=system:anonymous, verb=create, resource=nodes, subresource(s)=[checkpoint])", http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte(`{"items":["/var/lib/kubelet/checkpoints/checkpoint-consumer-0_shop-app.tar"]}`))
	}))
	defer kubelet.Close()
	k := engine.Kubelet{URL: kubelet.URL, HTTP: kubelet.Client(), Node: "node-a", HostRoot: "/host", TimeoutSeconds: 20,
		Token: func() (string, error) { return "agent-token", nil }}
	res, err := k.Checkpoint(context.Background(), engine.Container{Namespace: "shop", Pod: "consumer-0", Name: "app"}, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Method != http.MethodPost || got.URL.Path != "/checkpoint/shop/consumer-0/app" || got.URL.Query().Get("timeout") != "20" {
		t.Errorf("called %s %s", got.Method, got.URL)
	}
	if want := filepath.Join("/host", "/var/lib/kubelet/checkpoints/checkpoint-consumer-0_shop-app.tar"); res.Archive != want {
		t.Errorf("archive %s, want %s", res.Archive, want)
	}

	k.Token = func() (string, error) { return "", nil }
	if _, err := k.Checkpoint(context.Background(), engine.Container{Namespace: "shop", Pod: "consumer-0", Name: "app"}, engine.Options{}); err == nil ||
		!strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "subresource(s)=[checkpoint]") {
		t.Errorf("a refused call: %v", err)
	}
	// A kubelet whose certificate the agent does not trust is not called.
	k.HTTP = &http.Client{}
	k.Token = func() (string, error) { return "agent-token", nil }
	if _, err := k.Checkpoint(context.Background(), engine.Container{Namespace: "shop", Pod: "consumer-0", Name: "app"}, engine.Options{}); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Errorf("an untrusted kubelet: %v", err)
	}
}
