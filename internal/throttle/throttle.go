// Package throttle bounds the rate at which a migration moves bytes over
// the network (a MigrationPolicy's bandwidthPerMigration), so a drain that
// moves many pods leaves the nodes' links to their workloads. It wraps
// readers: the archive a Direct transfer sends, the bodies a registry push
// uploads, the image a target pulls.
package throttle

import (
	"context"
	"io"
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// chunk is the most one read takes at once: the limiter's burst, small
// enough that the rate holds over a fraction of a second.
const chunk = 64 << 10

// Limiter paces reads at a number of bytes per second; nil or a rate of 0
// does not limit. One Limiter paces everything one migration moves, so
// readers that share it share the rate.
type Limiter struct {
	lim   *rate.Limiter
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

// New is a Limiter of bytesPerSecond (nil when 0: no limit).
func New(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return &Limiter{lim: rate.NewLimiter(rate.Limit(bytesPerSecond), chunk), now: time.Now, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// wait blocks until n more bytes may go.
func (l *Limiter) wait(ctx context.Context, n int) error {
	now := l.now()
	r := l.lim.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		if err := l.sleep(ctx, d); err != nil {
			r.CancelAt(now)
			return err
		}
	}
	return nil
}

// Reader paces r; with a nil Limiter it is r.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &reader{ctx: ctx, r: r, l: l}
}

type reader struct {
	ctx context.Context
	r   io.Reader
	l   *Limiter
}

// Read reads at most a chunk, then waits for its bytes' turn: what the
// caller gets has been paid for, and a slow reader is not made slower.
func (t *reader) Read(p []byte) (int, error) {
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := t.r.Read(p)
	if n > 0 {
		if werr := t.l.wait(t.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Transport paces the bodies of the requests it sends (a registry
// push's uploads) through base; with a nil Limiter it is base.
func (l *Limiter) Transport(base http.RoundTripper) http.RoundTripper {
	if l == nil {
		return base
	}
	return transport{base: base, l: l}
}

type transport struct {
	base http.RoundTripper
	l    *Limiter
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return t.base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Body = readCloser{Reader: t.l.Reader(req.Context(), req.Body), Closer: req.Body}
	return t.base.RoundTrip(req)
}

type readCloser struct {
	io.Reader
	io.Closer
}
