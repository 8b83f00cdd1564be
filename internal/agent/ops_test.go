package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
)

func waitDone[R any](t *testing.T, s *opStore[R], id string) agentapi.Operation[R] {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if op, _ := s.Get(id); op.State != agentapi.OpRunning {
			return op
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("operation %s did not finish", id)
	return agentapi.Operation[R]{}
}

func TestOpStoreRunsOnceAndRemembers(t *testing.T) {
	dir := t.TempDir()
	s, err := newOpStore[string]("checkpoints", dir)
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	release := make(chan struct{})
	work := func(ctx context.Context, p progressFunc) (string, error) {
		runs.Add(1)
		p(50, 100)
		<-release
		return "archive.tar", nil
	}
	if op := s.StartOrGet("m1", work); op.State != agentapi.OpRunning {
		t.Fatalf("first call: %+v", op)
	}
	if op := s.StartOrGet("m1", work); op.State != agentapi.OpRunning {
		t.Fatalf("second call: %+v", op)
	}
	close(release)
	op := waitDone(t, s, "m1")
	if op.State != agentapi.OpSucceeded || op.Result != "archive.tar" || op.Progress.BytesDone != 50 {
		t.Fatalf("finished op %+v", op)
	}
	if runs.Load() != 1 {
		t.Fatalf("work ran %d times", runs.Load())
	}
	// A restarted agent knows the outcome.
	s2, err := newOpStore[string]("checkpoints", dir)
	if err != nil {
		t.Fatal(err)
	}
	if op, ok := s2.Get("m1"); !ok || op.Result != "archive.tar" {
		t.Fatalf("after restart: %+v %v", op, ok)
	}
	if err := s2.Forget("m1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s2.Get("m1"); ok {
		t.Fatal("forgotten op still known")
	}
}

func TestOpStoreReportsFailureAndInterruptedWork(t *testing.T) {
	dir := t.TempDir()
	s, _ := newOpStore[int]("transfers", dir)
	s.StartOrGet("bad", func(context.Context, progressFunc) (int, error) { return 0, errors.New("kubelet said 500") })
	if op := waitDone(t, s, "bad"); op.State != agentapi.OpFailed || op.Message != "kubelet said 500" {
		t.Fatalf("%+v", op)
	}
	block := make(chan struct{})
	defer func() { close(block); waitDone(t, s, "slow") }() // its last write must land before the temp dir goes
	s.StartOrGet("slow", func(context.Context, progressFunc) (int, error) { <-block; return 1, nil })
	if err := s.Forget("slow"); err == nil {
		t.Fatal("forgetting a running op must fail")
	}
	s2, _ := newOpStore[int]("transfers", dir)
	if op, _ := s2.Get("slow"); op.State != agentapi.OpFailed {
		t.Fatalf("an op running when the agent stopped must come back failed, got %+v", op)
	}
}

// An operation the agent's restart cut short reads as failed; a store that
// retries interrupted work starts it again on the next request, once.
func TestInterruptedOperationIsRetriedWhereAllowed(t *testing.T) {
	for _, retry := range []bool{false, true} {
		dir := t.TempDir()
		s, err := newOpStore[string]("transfers", dir)
		if err != nil {
			t.Fatal(err)
		}
		block := make(chan struct{})
		defer close(block)
		s.StartOrGet("t1", func(ctx context.Context, p progressFunc) (string, error) { <-block; return "", nil })
		// The agent dies here: a new store reads what the old one wrote.
		s2, err := newOpStore[string]("transfers", dir)
		if err != nil {
			t.Fatal(err)
		}
		s2.retryInterrupted = retry
		if op, _ := s2.Get("t1"); op.State != agentapi.OpFailed {
			t.Fatalf("after a restart the running op reads %s", op.State)
		}
		var runs atomic.Int32
		work := func(ctx context.Context, p progressFunc) (string, error) { runs.Add(1); return "pushed", nil }
		s2.StartOrGet("t1", work)
		op := waitDone(t, s2, "t1")
		s2.StartOrGet("t1", work)
		if want := map[bool]int32{false: 0, true: 1}[retry]; runs.Load() != want {
			t.Fatalf("retry %v: work ran %d times after the restart, want %d", retry, runs.Load(), want)
		}
		if retry && (op.State != agentapi.OpSucceeded || op.Result != "pushed") {
			t.Fatalf("retried op %+v", op)
		}
	}
}

func TestAwaitAnswersWhenTheOperationEnds(t *testing.T) {
	s, err := newOpStore[string]("checkpoints", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	op := s.StartOrGet("op-1", func(context.Context, progressFunc) (string, error) {
		<-release
		return "done", nil
	})
	// still running when the wait is over: the answer says so
	if got := s.Await(context.Background(), op, 20*time.Millisecond); got.State != agentapi.OpRunning {
		t.Fatalf("held past its wait: %+v", got)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(release)
	}()
	// ending while held: the answer is the outcome
	if got := s.Await(context.Background(), op, time.Minute); got.State != agentapi.OpSucceeded || got.Result != "done" {
		t.Fatalf("held, then %+v", got)
	}
	// the caller gone (its request ended): at once
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	never := make(chan struct{})
	op2 := s.StartOrGet("op-2", func(context.Context, progressFunc) (string, error) { <-never; return "", nil })
	if got := s.Await(ctx, op2, time.Minute); got.State != agentapi.OpRunning {
		t.Fatalf("a caller gone: %+v", got)
	}
	close(never)
	waitDone(t, s, "op-2")
}

func TestWaitIsBounded(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "x": 0, "-5": 0, "250": 250 * time.Millisecond, "60000": agentapi.MaxWait} {
		r := httptest.NewRequest(http.MethodPut, "/v1/checkpoints/x", nil)
		r.Header.Set(agentapi.HeaderWait, in)
		if got := waitOf(r); got != want {
			t.Errorf("%s %q: wait %s, want %s", agentapi.HeaderWait, in, got, want)
		}
	}
}
