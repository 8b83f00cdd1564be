package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// The sample consumer, run as main runs it, applies a published stream and
// shows on /state the producer's digest and a state any consumer of the
// same stream would hold.
func TestConsumerServesState(t *testing.T) {
	b := sdktest.Dial(t, testenv.AMQPURL(t), "")
	q, pod := b.Name("sample"), b.Name("sample-consumer")
	b.DeleteAtCleanup(t, q)
	b.DeleteAtCleanup(t, control.QueueName(pod))
	dir := t.TempDir()
	for f, v := range map[string]string{"uid": "uid-1", "name": pod} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	addrc, done := make(chan string, 1), make(chan error, 1)
	cfg := config{amqpURL: b.URL, queue: q, declare: true, prefetch: 2, delay: time.Millisecond,
		stateBytes: 1 << 20, podInfoDir: dir, hostnameFile: filepath.Join(dir, "hostname"), journal: filepath.Join(dir, "journal")}
	go func() {
		done <- run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addrc <- a })
	}()
	base := "http://" + <-addrc
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	sdktest.Eventually(t, 10*time.Second, "consumer ready", func() bool { return get(t, base+"/readyz", nil) == 200 })

	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: b.URL, RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	reference := newMemState(1 << 20)
	const n = 200
	for i := range n {
		body := []byte(fmt.Sprintf("order %d", i))
		seq, err := pub.Publish(ctx, body)
		if err != nil {
			t.Fatal(err)
		}
		reference.apply(seq, body)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	var v struct {
		Processed int64  `json:"processed"`
		LastSeq   int64  `json:"lastSeq"`
		Digest    string `json:"digest"`
		Mode      string `json:"mode"`
		Counters  struct {
			Applied int64 `json:"applied"`
		} `json:"counters"`
		State struct {
			Checksum, Expected string
			Intact             bool
		} `json:"state"`
	}
	// Poll /progress (no memory scan), then verify once with /state.
	var progress map[string]any
	sdktest.Eventually(t, 10*time.Second, "all applied", func() bool {
		progress = nil
		get(t, base+"/progress", &progress)
		seq, _ := progress["lastSeq"].(float64)
		return int64(seq) >= n
	})
	if _, scanned := progress["state"]; scanned || progress["digest"] != pub.State().Digest.String() {
		t.Fatalf("/progress %v: want the SDK's status (digest %s) and no memory check", progress, pub.State().Digest)
	}
	get(t, base+"/state", &v)
	if v.Processed != n || v.Digest != pub.State().Digest.String() || v.Mode != "Primary" || v.Counters.Applied != n {
		t.Fatalf("/state %+v, want %d processed with digest %s", v, n, pub.State().Digest)
	}
	if !v.State.Intact || v.State.Checksum != fmt.Sprintf("%016x", reference.expected) {
		t.Fatalf("state %+v, want checksum %016x", v.State, reference.expected)
	}
	if code := get(t, base+"/healthz", nil); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	journal, err := os.ReadFile(cfg.journal)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(journal)), "\n"); len(lines) != n || lines[0] != "1" || lines[n-1] != fmt.Sprint(n) {
		t.Fatalf("journal holds %d line(s) from %q to %q, want 1..%d", len(lines), lines[0], lines[len(lines)-1], n)
	}
}

func get(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}
