package lab

import (
	"context"
	"fmt"
	"time"

	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// waitFor polls check until it passes. It fails at once when the process
// that should become ready has died and is not restarted, or has been
// restarted restartsBeforeFailing times, with the end of its log. (Two
// kubelets started together race for the device-plugin socket, a path
// every kubelet shares: the loser exits and its restart wins.)
func waitFor(ctx context.Context, sv *supervise.Client, proc string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		if proc != "" && sv != nil {
			if st, err := sv.State(ctx); err == nil {
				for _, p := range st.Procs {
					if p.Name == proc && (p.Exited && !p.Restart || p.Restarts >= restartsBeforeFailing) {
						return fmt.Errorf("%s: %s%s", proc, p, logTail(p.Log, 15))
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

const restartsBeforeFailing = 3
