package throttle

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// clocked is a Limiter on a clock that moves only when it sleeps: the
// pace is read off that clock, never off the machine's.
func clocked(bytesPerSecond int64) (*Limiter, *time.Duration) {
	l := New(bytesPerSecond)
	start := time.Unix(0, 0)
	slept := new(time.Duration)
	l.now = func() time.Time { return start.Add(*slept) }
	l.sleep = func(_ context.Context, d time.Duration) error { *slept += d; return nil }
	return l, slept
}

func TestReaderPacesAtTheRate(t *testing.T) {
	const size = 4 << 20
	l, slept := clocked(1 << 20) // 1 MiB/s
	n, err := io.Copy(io.Discard, l.Reader(context.Background(), bytes.NewReader(make([]byte, size))))
	if err != nil || n != size {
		t.Fatalf("copied %d, %v", n, err)
	}
	// The first burst (one chunk) goes at once; the rest at 1 MiB/s.
	want := time.Duration(float64(size-chunk) / float64(1<<20) * float64(time.Second))
	if d := *slept - want; d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("4 MiB at 1 MiB/s waited %s, want %s", *slept, want)
	}
}

func TestNoLimitIsNoWrapper(t *testing.T) {
	var l *Limiter = New(0)
	r := bytes.NewReader(nil)
	if l.Reader(context.Background(), r) != io.Reader(r) {
		t.Fatal("a zero rate wraps the reader")
	}
	if l.Transport(http.DefaultTransport) != http.DefaultTransport {
		t.Fatal("a zero rate wraps the transport")
	}
}

func TestReaderStopsWithItsContext(t *testing.T) {
	l := New(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := l.Reader(ctx, bytes.NewReader(make([]byte, 2*chunk)))
	if _, err := io.Copy(io.Discard, r); err != context.Canceled {
		t.Fatalf("read on after its context ended: %v", err)
	}
}

// A request's body goes through the limiter, whole and in order.
func TestTransportPacesRequestBodies(t *testing.T) {
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got, _ = io.ReadAll(r.Body) }))
	defer srv.Close()
	l, slept := clocked(256 << 10)
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	req, _ := http.NewRequest(http.MethodPut, srv.URL, bytes.NewReader(body))
	resp, err := (&http.Client{Transport: l.Transport(http.DefaultTransport)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !bytes.Equal(got, body) {
		t.Fatalf("the server got %d bytes, not the body", len(got))
	}
	if *slept < 3*time.Second {
		t.Fatalf("1 MiB at 256 KiB/s waited %s on the limiter's clock: the body was not paced", *slept)
	}
}
