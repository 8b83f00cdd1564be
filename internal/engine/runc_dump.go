package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ms2m/ms2m/internal/staging"
)

// dumped is a finished CRIU dump with its root file system's changes.
type dumped struct {
	freeze   time.Duration
	steps    Steps
	stats    *DumpStats
	streamed int64
}

// dump writes CRIU's images of the container and its root file system's
// changes into dir, paused for both: they must agree, since a container
// running on after its dump could write to a file CRIU recorded open, and
// CRIU refuses to restore a file whose size changed. It is resumed after
// unless hold (CRIU, finding it frozen, leaves it so). The freeze is the
// whole pause.
//
// Pausing first puts runc's and CRIU's start-up (60-80 ms here) inside the
// freeze. Letting CRIU freeze the container itself is no shorter: CRIU
// polls the cgroup freezer in 100 ms steps (criu/seize.c), and a container
// that does not freeze at once (most at 512 MiB here) waits out a step.
// Measured on the lab at 512 MiB, three each: paused 456-607 ms, CRIU's
// own freeze 381-549 ms.
//
// With sink, CRIU sends the memory pages through it as it dumps them
// (Stream): the pause then lasts as long as they take to cross.
func (r Runc) dump(ctx context.Context, c Container, st runcState, ns []string, hold bool, dir string, sink io.ReadWriteCloser) (dumped, error) {
	var steps Steps
	var streamed int64
	images, work := filepath.Join(dir, staging.ImagesDir), filepath.Join(dir, "work")
	start := time.Now()
	if err := steps.Time("pause", func() error { return r.run(ctx, ns, "pause", c.ID) }); err != nil {
		return dumped{}, fmt.Errorf("pausing %s for its dump: %w", c, err)
	}
	err := steps.Time("dump", func() (err error) {
		if sink != nil {
			streamed, err = r.criuDumpStreaming(ctx, c, ns, images, work, sink)
			return err
		}
		return r.criuDump(ctx, c, ns, images, work)
	})
	if err == nil {
		if derr := steps.Time("rootfs", func() error { return r.writeRootfsDiff(st, filepath.Join(dir, staging.RootfsDiffTar)) }); derr != nil {
			err = fmt.Errorf("root file system changes of %s: %w", c, derr)
		}
	}
	switch {
	case err != nil:
		// Never leave a container frozen that nothing will follow; it may
		// be gone, which Release allows for.
		if rerr := r.Release(context.WithoutCancel(ctx), c.ID); rerr != nil {
			return dumped{}, errors.Join(err, fmt.Errorf("resuming %s: %w", c, rerr))
		}
		return dumped{}, err
	case !hold:
		// Paused above, so resumed at once: no second look at its state
		// while it is frozen.
		if rerr := steps.Time("resume", func() error { return r.run(context.WithoutCancel(ctx), ns, "resume", c.ID) }); rerr != nil {
			return dumped{}, fmt.Errorf("resuming %s: %w", c, rerr)
		}
	}
	d := dumped{freeze: time.Since(start), steps: steps, streamed: streamed}
	if s, err := ReadDumpStats(r.local(filepath.Join(work, "stats-dump"))); err == nil {
		d.stats = &s
	}
	return d, nil
}

// criuDump runs runc checkpoint, leaving the container as it found it
// (running, or paused).
func (r Runc) criuDump(ctx context.Context, c Container, ns []string, images, work string) error {
	if err := r.run(ctx, ns, "checkpoint", "--leave-running", "--image-path", images, "--work-path", work, c.ID); err != nil {
		return fmt.Errorf("runc checkpoint of %s: %w%s", c, err, logTail(r.local(filepath.Join(work, "dump.log"))))
	}
	return nil
}
