package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// dumped is a finished CRIU dump with its root file system's changes.
type dumped struct {
	freeze   time.Duration
	steps    Steps
	stats    *DumpStats
	streamed int64
}

// dump writes CRIU's images of each member and its root file system's
// changes where the member says, paused for both: they must agree, since a container
// running on after its dump could write to a file CRIU recorded open, and
// CRIU refuses to restore a file whose size changed. It is resumed after
// unless hold (CRIU, finding it frozen, leaves it so). The freeze is the
// whole pause.
//
// Pausing first puts runc's and CRIU's start-up (60-80 ms here) inside the
// freeze, unless ms2m's freeze hook is installed (see criuhook and
// dumpFrozenByHook). Letting CRIU freeze the container itself is no shorter: CRIU
// polls the cgroup freezer in 100 ms steps (criu/seize.c), and a container
// that does not freeze at once (most at 512 MiB here) waits out a step.
// Measured on the lab at 512 MiB, three each: paused 456-607 ms, CRIU's
// own freeze 381-549 ms.
//
// With sink, CRIU sends the memory pages through it as it dumps them
// (Stream): the pause then lasts as long as they take to cross.
//
// Several members (containers of one pod) are one cut: all are paused
// before the first dump and resumed after the last, so none runs on past
// the state of another that talks to it. The freeze is then the whole
// pod's, and the sum of their dumps.
func (r Runc) dump(ctx context.Context, members []member, hold bool, sink io.ReadWriteCloser) (dumped, error) {
	// A held container must never run after its dump, even for a moment:
	// paused first, it cannot, whatever the hook does.
	if r.FreezeHook && len(members) == 1 && sink == nil && !hold {
		return r.dumpFrozenByHook(ctx, members[0])
	}
	var steps Steps
	var streamed int64
	name := func(step string, m member) string {
		if len(members) == 1 {
			return step
		}
		return step + " " + m.c.Name
	}
	start := time.Now()
	var paused []member
	// Never leave a container frozen that nothing will follow; it may be
	// gone, which Release allows for.
	resumeAll := func(err error) error {
		for _, m := range paused {
			if rerr := r.Release(context.WithoutCancel(ctx), m.c.ID); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resuming %s: %w", m.c, rerr))
			}
		}
		return err
	}
	for _, m := range members {
		if err := steps.Time(name("pause", m), func() error { return r.run(ctx, m.ns, "pause", m.c.ID) }); err != nil {
			return dumped{}, resumeAll(fmt.Errorf("pausing %s for its dump: %w", m.c, err))
		}
		paused = append(paused, m)
	}
	for i, m := range members {
		err := steps.Time(name("dump", m), func() (err error) {
			if sink != nil && i == 0 {
				streamed, err = r.criuDumpStreaming(ctx, m.c, m.ns, m.images, m.work, sink)
				return err
			}
			return r.criuDump(ctx, m.c, m.ns, m.images, m.work)
		})
		if err == nil {
			if derr := steps.Time(name("rootfs", m), func() error { return r.writeRootfsDiff(m.st, m.rootfs) }); derr != nil {
				err = fmt.Errorf("root file system changes of %s: %w", m.c, derr)
			}
		}
		if err != nil {
			return dumped{}, resumeAll(err)
		}
	}
	if !hold {
		// Paused above, so resumed at once: no second look at their state
		// while they are frozen.
		for _, m := range members {
			if rerr := steps.Time(name("resume", m), func() error { return r.run(context.WithoutCancel(ctx), m.ns, "resume", m.c.ID) }); rerr != nil {
				return dumped{}, resumeAll(fmt.Errorf("resuming %s: %w", m.c, rerr))
			}
			paused = paused[1:]
		}
	}
	return dumped{freeze: time.Since(start), steps: steps, streamed: streamed, stats: r.dumpStats(members[0])}, nil
}

// dumpStats is CRIU's account of the member's dump (nil if unreadable:
// it only informs the log).
func (r Runc) dumpStats(m member) *DumpStats {
	s, err := ReadDumpStats(r.local(filepath.Join(m.work, "stats-dump")))
	if err != nil {
		return nil
	}
	return &s
}

// criuDump runs runc checkpoint, leaving the container as it found it
// (running, or paused).
func (r Runc) criuDump(ctx context.Context, c Container, ns []string, images, work string) error {
	if err := r.run(ctx, ns, "checkpoint", "--leave-running", "--image-path", images, "--work-path", work, c.ID); err != nil {
		return fmt.Errorf("runc checkpoint of %s: %w%s", c, err, logTail(r.local(filepath.Join(work, "dump.log"))))
	}
	return nil
}
