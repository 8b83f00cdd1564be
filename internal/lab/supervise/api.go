package supervise

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

func (d *daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		var s Spec
		if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, err := d.start(s, nil)
		reply(w, p, err)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		grace, _ := time.ParseDuration(r.URL.Query().Get("grace"))
		p, err := d.stopProc(r.URL.Query().Get("name"), grace)
		reply(w, p, err)
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		b, err := json.Marshal(&d.state)
		d.mu.Unlock()
		reply(w, json.RawMessage(b), err)
	})
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		grace, _ := time.ParseDuration(r.URL.Query().Get("grace"))
		d.shutdown(grace)
		reply(w, "ok", nil)
		go func() { time.Sleep(50 * time.Millisecond); close(d.stop) }()
	})
	return mux
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to the daemon of one run directory.
type Client struct {
	dir string
	hc  *http.Client
}

// Open returns a client for dir's daemon without starting one.
func Open(dir string) *Client {
	sock := SocketPath(dir)
	return &Client{dir: dir, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		},
	}}}
}

// Ensure returns a client for dir's daemon, starting the daemon first when
// none answers. The daemon runs from a copy of the current executable, so
// rebuilding or deleting the ms2m binary (or a test binary ending) does not
// pull it from under the lab.
func Ensure(ctx context.Context, dir string) (*Client, error) {
	c := Open(dir)
	if c.Ping(ctx) == nil {
		return c, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	exe := filepath.Join(dir, "ms2m-supervisor")
	if err := copyFile(self, exe); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	p, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{
		Dir:   dir,
		Env:   append(os.Environ(), envDaemon+"="+dir),
		Files: []*os.File{null, logf, logf},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return nil, err
	}
	// Reaped by this process if it dies early, else inherited by PID 1.
	exited := make(chan error, 1)
	go func() { _, err := p.Wait(); exited <- err }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if c.Ping(ctx) == nil {
			return c, nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "supervisor.log"))
			return nil, fmt.Errorf("supervisor exited: %s", tail(b, 800))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(30 * time.Millisecond):
		}
	}
	return nil, errors.New("supervisor did not answer within 10s")
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Ping checks that the daemon answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.State(ctx)
	return err
}

// State lists the processes the daemon knows.
func (c *Client) State(ctx context.Context) (*State, error) {
	var s State
	return &s, c.call(ctx, http.MethodGet, "/state", nil, &s)
}

// Start starts s; a process of the same name must not run.
func (c *Client) Start(ctx context.Context, s Spec) (*Proc, error) {
	var p Proc
	return &p, c.call(ctx, http.MethodPost, "/start", s, &p)
}

// Stop stops the named process: SIGTERM, then SIGKILL after grace.
func (c *Client) Stop(ctx context.Context, name string, grace time.Duration) (*Proc, error) {
	var p Proc
	q := url.Values{"name": {name}, "grace": {grace.String()}}
	return &p, c.call(ctx, http.MethodPost, "/stop?"+q.Encode(), nil, &p)
}

// Shutdown stops every process, kills whatever still descends from the
// daemon, and ends the daemon.
func (c *Client) Shutdown(ctx context.Context, grace time.Duration) error {
	err := c.call(ctx, http.MethodPost, "/shutdown?grace="+grace.String(), nil, nil)
	for deadline := time.Now().Add(5 * time.Second); err == nil && time.Now().Before(deadline); {
		if c.Ping(ctx) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://supervisor"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("supervisor: %s", bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// KillRecorded stops, by recorded PID and start time, whatever the records
// of a dead daemon still list, the daemon itself included, along with their
// descendants. It is the fallback when the daemon does not answer.
func KillRecorded(dir string) ([]string, error) {
	s, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var killed []string
	kill := func(name string, pid int, ticks uint64) {
		if !SameProcess(pid, ticks) {
			return
		}
		kids := Descendants(pid)
		if !killWait(pid, ticks, syscall.SIGTERM, 5*time.Second) {
			killWait(pid, ticks, syscall.SIGKILL, 2*time.Second)
		}
		killed = append(killed, fmt.Sprintf("%s (pid %d)", name, pid))
		for _, k := range kids {
			if t, err := StartTicks(k); err == nil && killWait(k, t, syscall.SIGKILL, 2*time.Second) {
				killed = append(killed, fmt.Sprintf("descendant pid %d of %s", k, name))
			}
		}
	}
	for i := len(s.Procs) - 1; i >= 0; i-- {
		kill(s.Procs[i].Name, s.Procs[i].PID, s.Procs[i].StartTicks)
	}
	kill("supervisor", s.Daemon, s.DaemonTicks)
	return killed, nil
}
