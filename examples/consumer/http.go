package main

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ms2m/ms2m/sdk"
)

// stateView is GET /state: the SDK's status with a snapshot taken between
// two messages, and the memory checked against it. The check reads all of
// the memory while no message may be applied (26 ms at 512 MiB: polled
// every 20 ms it halves the consumer's capacity), so /state is for
// verifying; GET /progress, the SDK's status alone, is for polling.
type stateView struct {
	sdk.Status
	State *memView `json:"state,omitempty"`
}

type memView struct {
	Bytes int64 `json:"bytes"`
	// Checksum is computed from the memory now; Expected was kept up to
	// date message by message. They differ only if memory was lost.
	Checksum string `json:"checksum"`
	Expected string `json:"expected"`
	Intact   bool   `json:"intact"`
}

func (a *app) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", a.getState)
	mux.HandleFunc("GET /progress", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.consumer.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// Ready once consuming the primary queue: a restored target joins its
	// Services only when caught up.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := a.consumer.Status()
		if st.Mode != sdk.Primary || !st.Connected {
			http.Error(w, fmt.Sprintf("mode %s, connected %v", st.Mode, st.Connected), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

func (a *app) getState(w http.ResponseWriter, _ *http.Request) {
	var v stateView
	var snap sdk.Snapshot
	a.consumer.Inspect(func(s sdk.Snapshot) {
		snap = s
		if a.mem.bytes() > 0 {
			sum := a.mem.scan()
			v.State = &memView{Bytes: a.mem.bytes(), Checksum: fmt.Sprintf("%016x", sum),
				Expected: fmt.Sprintf("%016x", a.mem.expected), Intact: sum == a.mem.expected}
		}
	})
	v.Status = a.consumer.Status()
	v.Snapshot = snap
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
