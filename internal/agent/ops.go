// Package agent is the ms2m node agent: it checkpoints containers through
// the kubelet, builds checkpoint images, moves them to other nodes (through
// a registry or straight to the target's agent) and makes them available to
// the node's container runtime.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// opStore runs node operations once per ID and remembers their outcome on
// disk, so that a repeated request (a controller polling, or restarted)
// gets the same operation back, even across an agent restart.
type opStore[R any] struct {
	kind string
	dir  string
	mu   sync.Mutex
	ops  map[string]*agentapi.Operation[R]
	now  func() time.Time
	// interrupted are the operations that ran when the agent stopped.
	// Where retryInterrupted is set (work that may run twice: a copy), the
	// next request for one starts it again; elsewhere it stays failed.
	interrupted      map[string]bool
	retryInterrupted bool
	// finished: closed when the operation of that ID ends (those this
	// agent runs; Await).
	finished map[string]chan struct{}
}

func newOpStore[R any](kind, dir string) (*opStore[R], error) {
	s := &opStore[R]{kind: kind, dir: filepath.Join(dir, kind), ops: map[string]*agentapi.Operation[R]{}, now: time.Now, interrupted: map[string]bool{},
		finished: map[string]chan struct{}{}}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue
		}
		op := &agentapi.Operation[R]{}
		if json.Unmarshal(b, op) != nil || op.ID == "" {
			continue
		}
		if op.State == agentapi.OpRunning {
			// It was running when the agent stopped: its work is lost.
			op.State, op.Message = agentapi.OpFailed, "the agent restarted while the operation ran"
			s.interrupted[op.ID] = true
		}
		s.ops[op.ID] = op
	}
	return s, nil
}

// progressFunc reports bytes done so far.
type progressFunc func(done, total int64)

// StartOrGet returns the operation with this ID, starting work for it
// when there is none yet. work runs in the background with a context that
// outlives the request that started it.
func (s *opStore[R]) StartOrGet(id string, work func(ctx context.Context, progress progressFunc) (R, error)) agentapi.Operation[R] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if op, ok := s.ops[id]; ok && !(s.retryInterrupted && s.interrupted[id]) {
		return *op
	}
	delete(s.interrupted, id)
	op := &agentapi.Operation[R]{ID: id, State: agentapi.OpRunning, Started: s.now()}
	s.ops[id] = op
	s.persistLocked(op)
	end := make(chan struct{})
	s.finished[id] = end
	go func() {
		defer close(end)
		started := s.now()
		progress := func(done, total int64) {
			s.mu.Lock()
			defer s.mu.Unlock()
			op.Progress.BytesDone, op.Progress.BytesTotal = done, total
			if el := s.now().Sub(started).Seconds(); el > 0 {
				op.Progress.BytesPerSecond = int64(float64(done) / el)
			}
		}
		res, err := work(context.Background(), progress)
		s.mu.Lock()
		defer s.mu.Unlock()
		op.Finished = s.now()
		if err != nil {
			op.State, op.Message = agentapi.OpFailed, err.Error()
		} else {
			op.State, op.Result = agentapi.OpSucceeded, res
		}
		s.persistLocked(op)
	}()
	return *op
}

// Await is StartOrGet's answer held for up to wait while the operation
// runs: the caller hears of its end as it ends, not at its next look.
func (s *opStore[R]) Await(ctx context.Context, op agentapi.Operation[R], wait time.Duration) agentapi.Operation[R] {
	if op.State != agentapi.OpRunning || wait <= 0 {
		return op
	}
	s.mu.Lock()
	end, ok := s.finished[op.ID]
	s.mu.Unlock()
	if !ok {
		return op
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-end:
	case <-t.C:
	case <-ctx.Done():
	}
	if now, ok := s.Get(op.ID); ok {
		return now
	}
	return op
}

// Get returns the operation with this ID.
func (s *opStore[R]) Get(id string) (agentapi.Operation[R], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	op, ok := s.ops[id]
	if !ok {
		return agentapi.Operation[R]{}, false
	}
	return *op, true
}

// Forget drops a finished operation.
func (s *opStore[R]) Forget(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if op, ok := s.ops[id]; ok && op.State == agentapi.OpRunning {
		return fmt.Errorf("%s %s is still running", s.kind, id)
	}
	delete(s.ops, id)
	delete(s.finished, id)
	err := os.Remove(s.file(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (s *opStore[R]) file(id string) string { return filepath.Join(s.dir, id+".json") }

func (s *opStore[R]) persistLocked(op *agentapi.Operation[R]) {
	b, err := json.Marshal(op)
	if err != nil {
		return
	}
	tmp := s.file(op.ID) + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, s.file(op.ID))
	}
}
