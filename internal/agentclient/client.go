// Package agentclient reaches ms2m node agents over mutual TLS: the
// controller's implementation of agentapi.Client, and the agents' own way
// to send a checkpoint to another node's agent (Direct transfers).
package agentclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/identity"
)

// Resolver finds the agent of a node.
type Resolver interface {
	// Endpoint is the agent's base URL (https://host:port); an error
	// wrapping agentapi.ErrNoAgent when the node has none.
	Endpoint(ctx context.Context, node string) (string, error)
}

// Client calls node agents.
type Client struct {
	Resolver Resolver
	tls      *tls.Config
	// OpWait is how long an agent may hold its answer to a checkpoint,
	// transfer or stage request while the operation runs (HeaderWait): a
	// caller that polls hears of the end as it happens. 0: at once.
	OpWait time.Duration

	mu    sync.Mutex
	nodes map[string]*http.Client
}

// New makes a client that authenticates with tlsConfig (client
// certificate, CA of the agents). Each call verifies that the agent it
// reaches holds the certificate of the node it was meant for.
func New(r Resolver, tlsConfig *tls.Config) *Client {
	return &Client{Resolver: r, tls: tlsConfig, nodes: map[string]*http.Client{}}
}

// httpFor is the HTTP client for node's agent: its TLS configuration
// expects that node's agent name, so an agent answering at another node's
// address (a pod IP reused, a compromised node) is not believed.
func (c *Client) httpFor(node string) *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.nodes[node]; ok {
		return h
	}
	cfg := c.tls.Clone()
	cfg.ServerName = identity.AgentDNSName(node)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.ResponseHeaderTimeout = 2 * time.Minute
	h := &http.Client{Transport: tr}
	c.nodes[node] = h
	return h
}

var _ agentapi.Client = (*Client)(nil)

// Ready asks the node's agent whether the node can take part, and how it
// restores.
func (c *Client) Ready(ctx context.Context, node string) (agentapi.ReadyReport, error) {
	var rep agentapi.ReadyReport
	code, err := c.do(ctx, node, http.MethodGet, agentapi.PathReady, nil, nil, &rep)
	if err != nil {
		return rep, err
	}
	if code != http.StatusOK || !rep.Ready {
		return rep, fmt.Errorf("%w: %s", agentapi.ErrNoAgent, strings.Join(rep.Problems, "; "))
	}
	return rep, nil
}

// Stage starts or polls the staging of a checkpoint on the target node.
func (c *Client) Stage(ctx context.Context, node string, req agentapi.StageRequest) (agentapi.Operation[agentapi.StageResult], error) {
	var op agentapi.Operation[agentapi.StageResult]
	_, err := c.opJSON(ctx, node, agentapi.PathStages+req.ID, req, &op)
	return op, err
}

// Checkpoint starts or polls a checkpoint.
func (c *Client) Checkpoint(ctx context.Context, node string, req agentapi.CheckpointRequest) (agentapi.Operation[agentapi.CheckpointResult], error) {
	var op agentapi.Operation[agentapi.CheckpointResult]
	_, err := c.opJSON(ctx, node, agentapi.PathCheckpoints+req.ID, req, &op)
	return op, err
}

// Expect announces a Direct transfer of checkpoint id to node's agent.
func (c *Client) Expect(ctx context.Context, node, id string, req agentapi.ExpectRequest) error {
	_, err := c.doJSON(ctx, node, http.MethodPut, agentapi.PathExpected+id, req, nil)
	return err
}

// Transfer starts or polls a transfer.
func (c *Client) Transfer(ctx context.Context, node string, req agentapi.TransferRequest) (agentapi.Operation[agentapi.TransferResult], error) {
	var op agentapi.Operation[agentapi.TransferResult]
	_, err := c.opJSON(ctx, node, agentapi.PathTransfers+req.ID, req, &op)
	return op, err
}

// Withdraw says the checkpoint will never be staged on node.
func (c *Client) Withdraw(ctx context.Context, node, id string) error {
	_, err := c.do(ctx, node, http.MethodDelete, agentapi.PathStages+id, nil, nil, nil)
	return err
}

// Cleanup removes a checkpoint's traces from a node. A node whose agent
// does not answer still has them: agentapi.ErrNoAgent.
func (c *Client) Cleanup(ctx context.Context, node, id, image string) error {
	path := agentapi.PathCheckpoints + id
	if image != "" {
		path += "?" + url.Values{agentapi.QueryImage: {image}}.Encode()
	}
	code, err := c.do(ctx, node, http.MethodDelete, path, nil, nil, nil)
	switch {
	case err != nil && code == http.StatusConflict:
		return fmt.Errorf("%w: %v", agentapi.ErrLeftBehind, err)
	}
	return err
}

// EndHeld kills the container checkpoint id holds frozen on node.
func (c *Client) EndHeld(ctx context.Context, node, id string) error {
	code, err := c.do(ctx, node, http.MethodDelete, agentapi.PathCheckpoints+id+agentapi.PathHeldSuffix, nil, nil, nil)
	if err != nil && (code == http.StatusConflict || code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		// An agent from before this request answers 405.
		return fmt.Errorf("%w: %v", agentapi.ErrNothingHeld, err)
	}
	return err
}

// ThawHeld lets the container checkpoint id holds frozen on node run again.
func (c *Client) ThawHeld(ctx context.Context, node, id string) error {
	code, err := c.do(ctx, node, http.MethodPost, agentapi.PathCheckpoints+id+agentapi.PathHeldSuffix+agentapi.PathThawSuffix, nil, nil, nil)
	if err != nil && (code == http.StatusConflict || code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		return fmt.Errorf("%w: %v", agentapi.ErrNothingHeld, err)
	}
	return err
}

// Send streams a checkpoint archive to node's agent (Direct transfer) and
// returns the image the node's runtime now holds.
func (c *Client) Send(ctx context.Context, node string, in agentapi.Incoming, archive io.Reader, size int64) (agentapi.TransferResult, error) {
	var res agentapi.TransferResult
	hdr := http.Header{}
	hdr.Set(agentapi.HeaderContainer, in.Container)
	hdr.Set(agentapi.HeaderSource, in.Source)
	hdr.Set("Content-Length", strconv.FormatInt(size, 10))
	_, err := c.do(ctx, node, http.MethodPut, agentapi.PathIncoming+in.ID, archive, hdr, &res)
	return res, err
}

// opJSON starts or polls an operation, letting the agent hold its answer
// for up to OpWait while the operation runs.
func (c *Client) opJSON(ctx context.Context, node, path string, in, out any) (int, error) {
	var hdr http.Header
	if c.OpWait > 0 {
		hdr = http.Header{agentapi.HeaderWait: {strconv.FormatInt(c.OpWait.Milliseconds(), 10)}}
	}
	return c.sendJSON(ctx, node, http.MethodPut, path, in, out, hdr)
}

func (c *Client) doJSON(ctx context.Context, node, method, path string, in, out any) (int, error) {
	return c.sendJSON(ctx, node, method, path, in, out, nil)
}

func (c *Client) sendJSON(ctx context.Context, node, method, path string, in, out any, extra http.Header) (int, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	hdr := http.Header{}
	for k, v := range extra {
		hdr[k] = v
	}
	hdr.Set("Content-Type", "application/json")
	return c.do(ctx, node, method, path, bytes.NewReader(b), hdr, out)
}

// do sends one request. HTTP errors other than 503 (a not-ready node)
// become errors carrying the agent's message.
func (c *Client) do(ctx context.Context, node, method, path string, body io.Reader, hdr http.Header, out any) (int, error) {
	base, err := c.Resolver.Endpoint(ctx, node)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if cl := hdr.Get("Content-Length"); cl != "" {
		req.ContentLength, _ = strconv.ParseInt(cl, 10, 64)
	}
	resp, err := c.httpFor(node).Do(req)
	if err != nil {
		return 0, fmt.Errorf("agent on %s: %w", node, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("agent on %s: %w", node, err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusServiceUnavailable {
		var e agentapi.ErrorBody
		_ = json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return resp.StatusCode, fmt.Errorf("agent on %s: %s %s: %s: %s", node, method, path, resp.Status, e.Error)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("agent on %s: reply: %w", node, err)
		}
	}
	return resp.StatusCode, nil
}

// Pages reports how far the pages of lazy checkpoint id staged on node
// have come.
func (c *Client) Pages(ctx context.Context, node, id string) (agentapi.PagesStatus, error) {
	var st agentapi.PagesStatus
	_, err := c.do(ctx, node, http.MethodGet, agentapi.PathStages+id+agentapi.PathPagesSuffix, nil, nil, &st)
	return st, err
}

// Restored reports whether the container restored from checkpoint id
// staged on node runs, by the word of its runtime handler.
func (c *Client) Restored(ctx context.Context, node, id string) (agentapi.RestoredStatus, error) {
	var st agentapi.RestoredStatus
	code, err := c.do(ctx, node, http.MethodGet, agentapi.PathStages+id+agentapi.PathRunningSuffix, nil, nil, &st)
	if code == http.StatusNotImplemented || code == http.StatusNotFound {
		return st, fmt.Errorf("%w: %v", agentapi.ErrNotRecorded, err)
	}
	return st, err
}

// PageStream opens the page stream of lazy checkpoint id from node's
// agent (an agent calls this of the source node's agent): a connection of
// its own, upgraded from HTTP/1.1 to CRIU's page server protocol over the
// agents' mutual TLS. It is not bound to ctx once open; the caller closes
// it.
func (c *Client) PageStream(ctx context.Context, node, id string) (io.ReadWriteCloser, error) {
	return c.upgrade(ctx, node, agentapi.PathCheckpoints+id+agentapi.PathPagesSuffix, "")
}

// SendPages opens the way for the pages of Stream checkpoint id to node's
// agent (the source node's agent calls this of the target's, as the agent
// of from): the same kind of connection, which the dumping CRIU's page
// transfer then goes through.
func (c *Client) SendPages(ctx context.Context, node, from, id string) (io.ReadWriteCloser, error) {
	return c.upgrade(ctx, node, agentapi.PathIncoming+id+agentapi.PathPagesSuffix, from)
}

func (c *Client) upgrade(ctx context.Context, node, path, source string) (io.ReadWriteCloser, error) {
	base, err := c.Resolver.Endpoint(ctx, node)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	cfg := c.tls.Clone()
	cfg.ServerName = identity.AgentDNSName(node)
	cfg.NextProtos = []string{"http/1.1"} // an upgrade has no HTTP/2 form
	d := tls.Dialer{Config: cfg, NetDialer: pageStreamDialer()}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("agent on %s: %w", node, err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nConnection: Upgrade\r\nUpgrade: " + agentapi.UpgradePages + "\r\n"
	if source != "" {
		req += agentapi.HeaderSource + ": " + source + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent on %s: %w", node, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent on %s: %w", node, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var e agentapi.ErrorBody
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(data, &e)
		return nil, fmt.Errorf("agent on %s: GET %s: %s: %s", node, path, resp.Status, e.Error)
	}
	_ = conn.SetDeadline(time.Time{})
	return bufferedConn{br, conn}, nil
}

// bufferedConn reads what the response's reader had buffered first.
type bufferedConn struct {
	r *bufio.Reader
	net.Conn
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// pageStreamLinkTimeout is how long a page stream may go without its
// peer acknowledging anything before it counts as broken. The restored
// process waits for the pages it faults on, so a link cut silently (no
// reset: packets dropped) must not leave it waiting for TCP's default of
// about fifteen minutes; broken, the stream fails its migration, which a
// ShadowPod source survives.
const pageStreamLinkTimeout = 5 * time.Second

// pageStreamDialer detects a dead link both while pages are asked for
// (TCP_USER_TIMEOUT: unacknowledged data) and while the stream is idle
// (keepalive probes).
func pageStreamDialer() *net.Dialer {
	return &net.Dialer{
		KeepAliveConfig: pageStreamKeepAlive,
		Control: func(_, _ string, rc syscall.RawConn) error {
			return setUserTimeout(rc)
		},
	}
}

var pageStreamKeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: int(pageStreamLinkTimeout / time.Second)}

func setUserTimeout(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(pageStreamLinkTimeout/time.Millisecond))
	})
	return errors.Join(err, serr)
}

// TunePageStream gives the serving side of a page stream (a connection
// its server accepted, TLS or not) the same detection of a dead link as
// the side that dialled it.
func TunePageStream(conn net.Conn) error {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("a page stream over %T is not a TCP connection", conn)
	}
	if err := tcp.SetKeepAliveConfig(pageStreamKeepAlive); err != nil {
		return err
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return err
	}
	return setUserTimeout(rc)
}
