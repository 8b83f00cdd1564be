package rabbitmq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	managementTimeout = 5 * time.Second
	// managementRetry spaces attempts once the API could not be reached,
	// so that a blackholed API does not add its timeout to every Progress
	// poll.
	managementRetry = 15 * time.Second
	// maxManagementBody bounds a response (a queue with many consumers
	// lists each of them).
	maxManagementBody = 16 << 20
)

var errServer = errors.New("server error")

// management is a minimal client of the RabbitMQ management HTTP API. Its
// failures never fail a call: they leave it "unavailable", which the
// handoff reports through Degraded, and the callers do without.
type management struct {
	base   *url.URL
	vhost  string
	client *http.Client

	mu      sync.Mutex
	err     error
	retryAt time.Time
}

func newManagement(cfg config) *management {
	return &management{base: cfg.mgmt, vhost: cfg.uri.Vhost, client: &http.Client{Timeout: managementTimeout}}
}

func (m *management) unavailable() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// get decodes GET /api/<path...> into out; each path segment is escaped,
// so the default vhost "/" becomes %2F. found is false on 404.
func (m *management) get(ctx context.Context, out any, path ...string) (found bool, err error) {
	m.mu.Lock()
	if m.err != nil && time.Now().Before(m.retryAt) {
		err := m.err
		m.mu.Unlock()
		return false, err
	}
	m.mu.Unlock()

	found, err = m.fetch(ctx, out, path)
	if errors.Is(err, errServer) {
		// an occasional 500 was seen while other vhosts came and went:
		// worth a second try before doing without
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
			found, err = m.fetch(ctx, out, path)
		}
	}
	if ctx.Err() != nil {
		// the caller gave up; that says nothing about the API
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.err = fmt.Errorf("management API %s unavailable: %w", m.base.Redacted(), err)
		m.retryAt = time.Now()
		// only a failure to talk to it costs a timeout worth avoiding
		var unreachable *url.Error
		if errors.As(err, &unreachable) {
			m.retryAt = m.retryAt.Add(managementRetry)
		}
		return false, m.err
	}
	m.err = nil
	return found, nil
}

func (m *management) fetch(ctx context.Context, out any, path []string) (bool, error) {
	segs := make([]string, len(path))
	for i, p := range path {
		segs[i] = url.PathEscape(p)
	}
	u := *m.base
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String()+"/api/"+strings.Join(segs, "/"), nil)
	if err != nil {
		return false, err
	}
	pass, _ := m.base.User.Password()
	req.SetBasicAuth(m.base.User.Username(), pass)
	resp, err := m.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxManagementBody)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized:
		return false, errors.New("credentials refused (the user needs the management or monitoring tag)")
	case resp.StatusCode != http.StatusOK:
		msg, _ := io.ReadAll(io.LimitReader(body, 512))
		err := fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
		if resp.StatusCode >= 500 {
			err = fmt.Errorf("%w: %w", errServer, err)
		}
		return false, err
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		return false, fmt.Errorf("decoding the response: %w", err)
	}
	return true, nil
}

type mgmtQueue struct {
	// Type is classic, quorum or stream (empty before RabbitMQ 3.8)
	Type      string `json:"type"`
	Unacked   int64  `json:"messages_unacknowledged"`
	Consumers []struct {
		// channel_details is [] rather than an object once the channel is
		// gone, hence raw
		Channel  json.RawMessage `json:"channel_details"`
		Prefetch int             `json:"prefetch_count"`
	} `json:"consumer_details"`
	Stats struct {
		Ack          int64 `json:"ack"`
		DeliverNoAck int64 `json:"deliver_no_ack"`
		GetNoAck     int64 `json:"get_no_ack"`
	} `json:"message_stats"`
}

// queueCounts is what only the management API knows of a queue.
type queueCounts struct {
	// unacked is the queue's statistics: refreshed by the broker when it
	// sees fit, seconds late or more (never a basis for a decision)
	unacked int64
	// acked counts messages consumed for good: acked, or delivered to
	// an auto-ack consumer (acked on delivery)
	acked int64
	// peers are the consumers' addresses, sorted, each once; empty, not
	// nil, when there are none, as nil means unknown
	peers []string
	// prefetch is the largest consumer prefetch (0: none set)
	prefetch int
	// described counts the consumers the API lists
	described int
	// located counts those whose channel it describes with an address: a
	// consumer's channel details come with the channel's statistics, late
	located int
	// kind is the queue's type: classic, quorum or stream
	kind string
	// consumers are the located consumers' connections
	consumers []consumerConn
}

// consumerConn is the connection of one of a queue's consumers.
type consumerConn struct {
	name, peer string
}

// queue returns a queue's counts; ok is false when the API cannot tell.
func (m *management) queue(ctx context.Context, name string) (c queueCounts, ok bool) {
	var q mgmtQueue
	if found, err := m.get(ctx, &q, "queues", m.vhost, name); err != nil || !found {
		return c, false
	}
	c.unacked, c.peers, c.kind = q.Unacked, []string{}, q.Type
	if c.kind == "" {
		c.kind = "classic"
	}
	c.acked = q.Stats.Ack + q.Stats.DeliverNoAck + q.Stats.GetNoAck
	c.described = len(q.Consumers)
	for _, cd := range q.Consumers {
		c.prefetch = max(c.prefetch, cd.Prefetch)
		var ch struct {
			PeerHost   string `json:"peer_host"`
			Connection string `json:"connection_name"`
		}
		if json.Unmarshal(cd.Channel, &ch) != nil || ch.PeerHost == "" {
			continue
		}
		c.located++
		c.consumers = append(c.consumers, consumerConn{name: ch.Connection, peer: ch.PeerHost})
		if !slices.Contains(c.peers, ch.PeerHost) {
			c.peers = append(c.peers, ch.PeerHost)
		}
	}
	slices.Sort(c.peers)
	return c, true
}

// closeConnection closes a client's connection (DELETE
// /api/connections/<name>), giving reason to the client; one already gone
// is no error. Unlike reads, a failure here is the caller's to handle.
func (m *management) closeConnection(ctx context.Context, name, reason string) error {
	u := *m.base
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.String()+"/api/connections/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	pass, _ := m.base.User.Password()
	req.SetBasicAuth(m.base.User.Username(), pass)
	req.Header.Set("X-Reason", reason)
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("management API %s: %w", m.base.Redacted(), err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusNotFound:
		return nil
	case http.StatusUnauthorized:
		return fmt.Errorf("management API %s refused to close connection %q: the user may close only its own connections unless it has the administrator tag", m.base.Redacted(), name)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("management API %s: closing connection %q: HTTP %d: %s", m.base.Redacted(), name, resp.StatusCode, strings.TrimSpace(string(msg)))
}
