// Command protocol-consumer is a workload written for MS2M before ms2m: it
// speaks only the control protocol (START_REPLAY / END_REPLAY on
// ms2m.control.<pod-name>) with plain amqp091, without the ms2m SDK. It
// does not de-duplicate and does not notice a restore, so it migrates
// at-least-once: GET /state (and /progress) reports how many distinct
// sequence numbers it has seen, and how many it saw again.
//
// It consumes one queue at a time: its own, or the replay queue between
// START_REPLAY and END_REPLAY, acking each message after applying it, with
// a prefetch of MS2M_PREFETCH (default 1). It can behave like SHADOW's
// sample consumer, which workloads of this kind resemble: MS2M_CONTROL=poll
// reads the control queue with basic.get every MS2M_CONTROL_POLL (default
// 1 s) instead of consuming it (the broker then never shows a consumer on
// it), and MS2M_IGNORE_SIGTERM=1 makes it ignore SIGTERM, as a process that
// runs as PID 1 without a handler does (it stops only when killed).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
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
	seen    map[string]map[int64]bool // by producer
	Applied int64                     `json:"processed"`
	Repeats int64                     `json:"repeats"`
	// MaxSeq is the highest sequence number seen (of any producer).
	MaxSeq int64 `json:"lastSeq"`
	// Distinct counts the different messages applied.
	Distinct int64 `json:"distinct"`
	// Contiguous is the n for which 1..n of the first producer seen have
	// all been seen.
	Contiguous int64  `json:"contiguous"`
	first      string // that producer
	// Replay is the replay queue being consumed in place of the primary.
	Replay string `json:"replay,omitempty"`
}

func (s *state) replaying() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Replay
}

func (s *state) setReplay(q string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Replay = q
}

func (s *state) apply(d amqp.Delivery) {
	seq, ok, _ := sdk.SeqOf(d.Headers)
	producer := sdk.ProducerOf(d.Headers)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Applied++
	if !ok {
		return
	}
	if s.seen[producer] == nil {
		s.seen[producer] = map[int64]bool{}
	}
	if s.first == "" {
		s.first = producer
	}
	if s.seen[producer][seq] {
		s.Repeats++
		return
	}
	s.seen[producer][seq] = true
	s.Distinct++
	s.MaxSeq = max(s.MaxSeq, seq)
	for producer == s.first && s.seen[producer][s.Contiguous+1] {
		s.Contiguous++
	}
}

type config struct {
	url, queue string
	prefetch   int
	delay      time.Duration
	poll       bool
	pollEvery  time.Duration
}

func main() {
	cfg := config{url: os.Getenv("MS2M_AMQP_URL"), queue: os.Getenv("MS2M_QUEUE"), prefetch: 1,
		poll: os.Getenv("MS2M_CONTROL") == "poll", pollEvery: time.Second}
	if v, err := strconv.Atoi(os.Getenv("MS2M_PREFETCH")); err == nil && v > 0 {
		cfg.prefetch = v
	}
	if v, err := time.ParseDuration(os.Getenv("MS2M_PROCESSING_DELAY")); err == nil {
		cfg.delay = v
	}
	if v, err := time.ParseDuration(os.Getenv("MS2M_CONTROL_POLL")); err == nil && v > 0 {
		cfg.pollEvery = v
	}
	st := &state{seen: map[string]map[int64]bool{}}
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
	ctx := context.Background()
	if os.Getenv("MS2M_IGNORE_SIGTERM") == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM)
		defer stop()
	}
	for ctx.Err() == nil {
		if err := session(ctx, cfg, st); err != nil {
			log.Printf("session: %v; reconnecting", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// session consumes one queue at a time, the primary or the replay queue
// START_REPLAY names (until END_REPLAY), and follows the pod's control
// queue, until the connection dies (a restore closes it) or ctx ends. The
// replay, once started, outlives a reconnect.
func session(ctx context.Context, cfg config, st *state) error {
	conn, err := amqp.Dial(cfg.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Qos(cfg.prefetch, 0, false); err != nil {
		return err
	}
	host, _ := os.ReadFile("/etc/hostname")
	ctl := control.QueueName(strings.TrimSpace(string(host)))
	if _, err := ch.QueueDeclare(ctl, true, false, false, false, nil); err != nil {
		return err
	}
	var ctlMsgs <-chan amqp.Delivery
	if !cfg.poll {
		if ctlMsgs, err = ch.Consume(ctl, "", true, false, false, false, nil); err != nil {
			return err
		}
	}
	consuming, in := "", (<-chan amqp.Delivery)(nil)
	follow := func() error {
		want := cfg.queue
		if st.replaying() != "" {
			want = st.replaying()
		}
		if want == consuming {
			return nil
		}
		if in != nil {
			_ = ch.Cancel("data", false)
			for d := range in { // what it was sent before the cancel
				if err := applyAck(cfg, st, d); err != nil {
					return err
				}
			}
		}
		var err error
		consuming = want
		in, err = ch.Consume(want, "data", false, false, false, false, nil)
		return err
	}
	if err := follow(); err != nil {
		return err
	}
	poll := time.NewTicker(cfg.pollEvery)
	defer poll.Stop()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	for {
		var body []byte
		select {
		case <-ctx.Done():
			return nil
		case err := <-closed:
			return err
		case d, ok := <-in:
			if !ok {
				return errors.New("consumer cancelled by the broker")
			}
			if err := applyAck(cfg, st, d); err != nil {
				return err
			}
			continue
		case d := <-ctlMsgs:
			body = d.Body
		case <-poll.C:
			if !cfg.poll {
				continue
			}
			d, ok, err := ch.Get(ctl, true)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			body = d.Body
		}
		m, err := control.Decode(body)
		if err != nil {
			log.Printf("control: %v", err)
			continue
		}
		switch m.Type {
		case control.StartReplay:
			p, _ := m.Replay()
			st.setReplay(p.Queue)
		case control.EndReplay:
			st.setReplay("")
		}
		if err := follow(); err != nil {
			return err
		}
	}
}

func applyAck(cfg config, st *state, d amqp.Delivery) error {
	time.Sleep(cfg.delay)
	st.apply(d)
	return d.Ack(false)
}
