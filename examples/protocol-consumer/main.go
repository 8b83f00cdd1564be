// Command protocol-consumer is a workload written for MS2M before ms2m: it
// speaks only the control protocol (START_REPLAY / END_REPLAY on
// ms2m.control.<pod-name>) with plain amqp091, without the ms2m SDK. It
// does not de-duplicate and does not notice a restore, so it migrates
// at-least-once: GET /state (and /progress) reports how many distinct
// sequence numbers it has seen, and how many it saw again.
package main

import (
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
)

type state struct {
	mu      sync.Mutex
	seen    map[int64]bool
	Applied int64 `json:"processed"`
	Repeats int64 `json:"repeats"`
	MaxSeq  int64 `json:"lastSeq"`
	// Distinct counts the different sequence numbers applied.
	Distinct int64 `json:"distinct"`
	// Contiguous is the n for which 1..n have all been seen.
	Contiguous int64 `json:"contiguous"`
}

func (s *state) apply(d amqp.Delivery) {
	seq, ok, _ := sdk.SeqOf(d.Headers)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Applied++
	if !ok {
		return
	}
	if s.seen[seq] {
		s.Repeats++
		return
	}
	s.seen[seq] = true
	s.Distinct++
	s.MaxSeq = max(s.MaxSeq, seq)
	for s.seen[s.Contiguous+1] {
		s.Contiguous++
	}
}

func main() {
	url, queue := os.Getenv("MS2M_AMQP_URL"), os.Getenv("MS2M_QUEUE")
	st := &state{seen: map[int64]bool{}}
	serveState := func(w http.ResponseWriter, _ *http.Request) {
		st.mu.Lock()
		defer st.mu.Unlock()
		_ = json.NewEncoder(w).Encode(st)
	}
	// Its state is small: progress (what pollers read) is all of it.
	http.HandleFunc("/state", serveState)
	http.HandleFunc("/progress", serveState)
	http.HandleFunc("/healthz", func(http.ResponseWriter, *http.Request) {})
	go func() { log.Fatal(http.ListenAndServe(":8080", nil)) }()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	for ctx.Err() == nil {
		if err := session(ctx, url, queue, st); err != nil {
			log.Printf("session: %v; reconnecting", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// session consumes the primary queue and the pod's control queue until the
// connection dies (a restore closes it) or ctx ends.
func session(ctx context.Context, url, queue string, st *state) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	host, _ := os.ReadFile("/etc/hostname")
	ctl := control.QueueName(strings.TrimSpace(string(host)))
	if _, err := ch.QueueDeclare(ctl, true, false, false, false, nil); err != nil {
		return err
	}
	primary, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return err
	}
	ctlMsgs, err := ch.Consume(ctl, "", true, false, false, false, nil)
	if err != nil {
		return err
	}
	var replay <-chan amqp.Delivery
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-closed:
			return err
		case d := <-primary:
			st.apply(d)
		case d, ok := <-replay:
			if !ok {
				replay = nil // cancelled by END_REPLAY
				continue
			}
			st.apply(d)
		case d := <-ctlMsgs:
			m, err := control.Decode(d.Body)
			if err != nil {
				log.Printf("control: %v", err)
				continue
			}
			switch m.Type {
			case control.StartReplay:
				p, _ := m.Replay()
				if replay, err = ch.Consume(p.Queue, "replay", true, false, false, false, nil); err != nil {
					return err
				}
			case control.EndReplay:
				_ = ch.Cancel("replay", false)
			}
		}
	}
}
