// Command counter is the lab's test workload: an HTTP server whose state
// lives only in memory, so that a checkpoint restored elsewhere shows
// whether the state came along. It also reaches out on request, so tests
// can see what a pod can reach.
//
//	GET /          counts a hit and returns the state
//	GET /peek      returns the state without counting
//	GET /fetch?url=U   GETs U from inside the pod; https URLs as an
//	                   in-cluster client (service account CA and token)
//	GET /dial?addr=A[&amqp=1]   opens TCP to A (and reads an AMQP greeting)
//	GET /hold?addr=A   opens TCP to A and keeps it; the state shows whether
//	                   it is still open (a restore elsewhere closes it)

// CRIU cannot dump the MPTCP sockets Go listens with by default.
//
//go:debug multipathtcp=0
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type state struct {
	mu    sync.Mutex
	Hits  int64 `json:"hits"`
	Ticks int64 `json:"ticks"`
	// Boot identifies the process incarnation: a restore keeps it, a
	// restart changes it.
	Boot    string    `json:"boot"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Held    []*held   `json:"held,omitempty"`
}

type held struct {
	Addr string `json:"addr"`
	Open bool   `json:"open"`
	End  string `json:"end,omitempty"`
}

func main() {
	addr := flag.String("listen", ":8080", "listen address")
	once := flag.Bool("once", false, "print the process's incarnation and exit (an init container)")
	flag.Parse()
	host, _ := os.Hostname()
	if *once {
		fmt.Printf("init %s-%d done\n", host, time.Now().UnixNano())
		return
	}
	s := &state{Boot: fmt.Sprintf("%s-%d", host, time.Now().UnixNano()), PID: os.Getpid(), Started: time.Now().UTC()}
	go func() {
		for range time.Tick(100 * time.Millisecond) {
			s.mu.Lock()
			s.Ticks++
			s.mu.Unlock()
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { s.reply(w, true) })
	mux.HandleFunc("GET /peek", func(w http.ResponseWriter, _ *http.Request) { s.reply(w, false) })
	mux.HandleFunc("GET /fetch", fetch)
	mux.HandleFunc("GET /dial", dial)
	mux.HandleFunc("GET /hold", s.hold)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

func (s *state) reply(w http.ResponseWriter, hit bool) {
	s.mu.Lock()
	if hit {
		s.Hits++
	}
	b, _ := json.Marshal(s)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *state) hold(w http.ResponseWriter, r *http.Request) {
	addr := r.URL.Query().Get("addr")
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	h := &held{Addr: addr, Open: true}
	s.mu.Lock()
	s.Held = append(s.Held, h)
	s.mu.Unlock()
	go func() {
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		s.mu.Lock()
		h.Open, h.End = false, err.Error()
		s.mu.Unlock()
	}()
	fmt.Fprintf(w, "holding %s -> %s\n", c.LocalAddr(), c.RemoteAddr())
}

var client = &http.Client{Timeout: 5 * time.Second}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func fetch(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, r.URL.Query().Get("url"), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := client
	if req.URL.Scheme == "https" {
		if c, err = inCluster(req); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}

// inCluster authenticates req as the pod's service account and trusts the
// cluster CA, as client-go's in-cluster configuration does.
func inCluster(req *http.Request) (*http.Client, error) {
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return nil, err
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// dial proves reachability of a TCP service; with amqp=1 it also speaks the
// AMQP 0-9-1 protocol header and wants the broker's Connection.Start frame.
func dial(w http.ResponseWriter, r *http.Request) {
	c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer c.Close()
	if r.URL.Query().Get("amqp") == "" {
		fmt.Fprintf(w, "connected %s -> %s\n", c.LocalAddr(), c.RemoteAddr())
		return
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hdr := make([]byte, 11)
	if _, err := io.ReadFull(c, hdr); err != nil {
		http.Error(w, "no AMQP greeting: "+err.Error(), http.StatusBadGateway)
		return
	}
	// frame type 1 (method), class 10 (connection), method 10 (start)
	if hdr[0] != 1 || hdr[7] != 0 || hdr[8] != 10 || hdr[9] != 0 || hdr[10] != 10 {
		http.Error(w, fmt.Sprintf("not a Connection.Start frame: % x", hdr), http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "amqp connection.start from %s\n", c.RemoteAddr())
}
