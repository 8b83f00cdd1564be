package lab

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress prints steps with their elapsed time, so the long ones (the
// first Kubernetes build takes 11-15 minutes) show that they advance.
type progress struct {
	w  io.Writer
	t0 time.Time
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w, t0: time.Now()}
}

func (p *progress) stamp() string { return fmt.Sprintf("[%6.1fs]", time.Since(p.t0).Seconds()) }

func (p *progress) logf(format string, args ...any) {
	fmt.Fprintf(p.w, "%s     %s\n", p.stamp(), fmt.Sprintf(format, args...))
}

func (p *progress) step(name string, f func() error) error {
	fmt.Fprintf(p.w, "%s ==> %s\n", p.stamp(), name)
	t := time.Now()
	if err := f(); err != nil {
		fmt.Fprintf(p.w, "%s FAILED %s: %v\n", p.stamp(), name, err)
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(p.w, "%s     %s: done in %.1fs\n", p.stamp(), name, time.Since(t).Seconds())
	return nil
}

// logTail returns the last lines of a process's log, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n  | " + strings.Join(lines, "\n  | ")
}
