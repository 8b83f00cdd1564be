package sdk_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

func broker(t *testing.T) *sdktest.Broker {
	t.Helper()
	return sdktest.Dial(t, testenv.AMQPURL(t), os.Getenv("MS2M_RABBITMQ_MGMT_URL"))
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p[:len(p)-1])); return len(p), nil }

// recorder is an application: it records what it applied and can refuse a
// sequence number a set number of times.
type recorder struct {
	mu    sync.Mutex
	seqs  []int64
	fails map[int64]int
}

func (r *recorder) handle(_ context.Context, m sdk.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fails[m.Seq] > 0 {
		r.fails[m.Seq]--
		return fmt.Errorf("refusing %d", m.Seq)
	}
	r.seqs = append(r.seqs, m.Seq)
	return nil
}

func (r *recorder) applied() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.seqs...)
}

// expectRun checks that seqs is exactly from..to, each once, in order.
func expectRun(t *testing.T, who string, seqs []int64, from, to int64) {
	t.Helper()
	if int64(len(seqs)) != to-from+1 {
		t.Errorf("%s applied %d messages, want %d (%d..%d)", who, len(seqs), to-from+1, from, to)
	}
	for i, s := range seqs {
		if s != from+int64(i) {
			t.Fatalf("%s: applied #%d is seq %d, want %d (applied around it: %v)",
				who, i, s, from+int64(i), seqs[max(0, i-5):min(len(seqs), i+6)])
		}
	}
}

// identity writes pod identity files and returns where.
func identity(t *testing.T, dir, uid, name string) sdk.IdentityFiles {
	t.Helper()
	f := sdk.IdentityFiles{UID: filepath.Join(dir, "uid"), Name: filepath.Join(dir, "name"),
		Hostname: filepath.Join(dir, "hostname")}
	// Written aside and renamed, as the kubelet swaps downward-API files.
	for path, v := range map[string]string{f.UID: uid, f.Name: name} {
		if err := os.WriteFile(path+".new", []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// running is a Consumer running in the background.
type running struct {
	*sdk.Consumer
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, cfg sdk.Config) *running {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := sdk.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Consumer: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

// producer publishes at a steady rate and keeps its own reference of what
// the broker confirmed, computed from the confirmed messages alone.
type producer struct {
	pub    *sdk.Publisher
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	confirmed []int64
	reference sdk.Digest
}

func startProducer(t *testing.T, url, exchange, key, connName string, rate int) *producer {
	t.Helper()
	p := &producer{done: make(chan error, 1)}
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{
		URL: url, Exchange: exchange, RoutingKey: key, ConnectionName: connName, Logger: testLogger(t),
		Confirmed: func(seq int64, body []byte) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.confirmed = append(p.confirmed, seq)
			p.reference = p.reference.Next(seq, body)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.pub = pub
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				p.done <- nil
				return
			case <-tick.C:
			}
			if _, err := pub.Publish(ctx, []byte(fmt.Sprintf("payload %d of a steady stream", i))); err != nil {
				if ctx.Err() == nil {
					p.done <- err
					return
				}
			}
		}
	}()
	t.Cleanup(func() { p.cancel(); _ = pub.Close() })
	return p
}

// lastConfirmed is the highest confirmed sequence number so far.
func (p *producer) lastConfirmed() int64 { return p.pub.State().LastSeq }

// stop stops publishing, waits for every confirm and returns the reference:
// the confirmed sequence numbers (checked to be 1..n) and their digest.
func (p *producer) stop(t *testing.T) (n int64, ref sdk.Digest) {
	t.Helper()
	p.cancel()
	if err := <-p.done; err != nil {
		t.Fatalf("producer: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.pub.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	expectRun(t, "producer confirms", p.confirmed, 1, int64(len(p.confirmed)))
	if st := p.pub.State(); st.Digest != p.reference || st.Published != int64(len(p.confirmed)) {
		t.Fatalf("publisher state %+v disagrees with its confirms", st)
	}
	return int64(len(p.confirmed)), p.reference
}

// expectExactlyOnce checks a consumer's final state against the producer's
// reference.
func expectExactlyOnce(t *testing.T, who string, c *sdk.Consumer, n int64, ref sdk.Digest) {
	t.Helper()
	s, k := c.Snapshot(), c.Counters()
	if s.LastSeq != n || s.Processed != n || s.Unsequenced != 0 {
		t.Errorf("%s: snapshot %+v, want %d processed up to seq %d", who, s, n, n)
	}
	if s.Digest != ref {
		t.Errorf("%s: digest %s, reference %s", who, s.Digest, ref)
	}
	if k.Gaps != 0 || k.Missing != 0 {
		t.Errorf("%s: %d gaps, %d missing", who, k.Gaps, k.Missing)
	}
	t.Logf("%s: %+v counters %+v", who, s, k)
}
