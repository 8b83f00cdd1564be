package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Prober measures the workload as a client of its Service would: every
// 10 ms it sends GET /healthz to one of the Service's ready endpoints, with
// a 1 s timeout (a readiness probe's default). Downtime is the time from a
// failed probe to the next good one; a stall is a slow good answer.
type Prober struct {
	c         client.Client
	namespace string
	service   string
	http      *http.Client

	mu        sync.Mutex
	downtime  time.Duration
	downSince time.Time
	maxStall  time.Duration
	probes    int
	failures  int
	// endpoints is the Service's ready addresses, refreshed every 100 ms.
	endpoints []string
	// progress of the stream: the highest sequence any pod has applied and
	// when it last grew
	armed bool
	// outages are the first failure of each down period, for the report
	outages  []Outage
	maxSeq   int64
	lastGrow time.Time
	maxGap   time.Duration
	gapFrom  time.Time
	gapSeqs  [2]int64
}

// NewProber watches service in namespace.
func NewProber(c client.Client, namespace, service string) *Prober {
	return &Prober{c: c, namespace: namespace, service: service,
		http: &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); p.refresh(ctx) }()
	go func() { defer wg.Done(); p.probeLoop(ctx) }()
	go func() { defer wg.Done(); p.progressLoop(ctx) }()
	wg.Wait()
}

func (p *Prober) refresh(ctx context.Context) {
	for ctx.Err() == nil {
		slices := &discoveryv1.EndpointSliceList{}
		if err := p.c.List(ctx, slices, client.InNamespace(p.namespace), client.MatchingLabels{discoveryv1.LabelServiceName: p.service}); err == nil {
			var eps []string
			for _, s := range slices.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready && len(e.Addresses) > 0 {
						eps = append(eps, e.Addresses[0])
					}
				}
			}
			p.mu.Lock()
			p.endpoints = eps
			p.mu.Unlock()
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

func (p *Prober) probeLoop(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		p.mu.Lock()
		eps := p.endpoints
		p.mu.Unlock()
		start := time.Now()
		ok, why, ep := false, "no ready endpoint", ""
		if len(eps) > 0 {
			ep = eps[i%len(eps)]
			if err := p.get(ctx, ep, "/healthz", nil); err != nil {
				why = err.Error()
			} else {
				ok = true
			}
		}
		p.record(start, time.Since(start), ok, ep, why)
		sleep(ctx, 10*time.Millisecond-time.Since(start))
	}
}

func (p *Prober) record(at time.Time, took time.Duration, ok bool, endpoint, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// The workload is measured from its first good answer on: before, the
	// prober has only not found it yet.
	if !p.armed {
		if !ok {
			return
		}
		p.armed = true
	}
	p.probes++
	switch {
	case !ok:
		p.failures++
		if p.downSince.IsZero() {
			p.downSince = at
			if len(p.outages) < 5 {
				p.outages = append(p.outages, Outage{At: at, Endpoint: endpoint, Error: why})
			}
		}
	case !p.downSince.IsZero():
		p.downtime += at.Add(took).Sub(p.downSince)
		p.downSince = time.Time{}
	}
	if ok && took > p.maxStall {
		p.maxStall = took
	}
}

// progressLoop follows the stream's progress through every pod of the
// workload (source and target alike), from their /progress: /state checks
// the consumer's whole memory while it applies nothing, which polled every
// 20 ms would slow a large consumer down to a fraction of its capacity.
func (p *Prober) progressLoop(ctx context.Context) {
	for ctx.Err() == nil {
		pods := &corev1.PodList{}
		if err := p.c.List(ctx, pods, client.InNamespace(p.namespace)); err == nil {
			for _, pod := range pods.Items {
				if pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
					continue
				}
				var st State
				if p.get(ctx, pod.Status.PodIP, "/progress", &st) == nil {
					p.progress(st.LastSeq, time.Now())
				}
			}
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

func (p *Prober) progress(seq int64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq <= p.maxSeq {
		return
	}
	if !p.lastGrow.IsZero() {
		if g := now.Sub(p.lastGrow); g > p.maxGap {
			p.maxGap, p.gapFrom, p.gapSeqs = g, p.lastGrow, [2]int64{p.maxSeq, seq}
		}
	}
	p.maxSeq, p.lastGrow = seq, now
}

// ResetGap starts measuring the processing gap afresh (after warm-up).
func (p *Prober) ResetGap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxGap = 0
}

// Measures is what the prober saw.
type Measures struct {
	Downtime, MaxStall, MaxGap time.Duration
	// GapFrom is when the longest gap began, GapSeqs the last message
	// seen applied before it and the first after.
	GapFrom          time.Time
	GapSeqs          [2]int64
	Probes, Failures int
	Outages          []Outage
}

// Outage is the first failed probe of a down period.
type Outage struct {
	At       time.Time
	Endpoint string
	Error    string
}

// Measures returns the totals so far.
func (p *Prober) Measures() Measures {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.downtime
	if !p.downSince.IsZero() {
		d += time.Since(p.downSince)
	}
	return Measures{Downtime: d, MaxStall: p.maxStall, MaxGap: p.maxGap, GapFrom: p.gapFrom, GapSeqs: p.gapSeqs, Probes: p.probes, Failures: p.failures,
		Outages: append([]Outage(nil), p.outages...)}
}

// State is the sample consumer's /state (the part the demo reads).
type State struct {
	Processed   int64  `json:"processed"`
	LastSeq     int64  `json:"lastSeq"`
	Digest      string `json:"digest"`
	Unsequenced int64  `json:"unsequenced"`
	Mode        string `json:"mode"`
	Counters    struct {
		Duplicates int64 `json:"duplicates"`
		Replayed   int64 `json:"replayed"`
		Missing    int64 `json:"missing"`
	} `json:"counters"`
	State struct {
		Intact bool `json:"intact"`
	} `json:"state"`
	// Contiguous and Repeats are the protocol-only consumer's: 1..n seen,
	// and how many it saw again (it keeps no digest).
	Contiguous *int64 `json:"contiguous"`
	Repeats    int64  `json:"repeats"`
}

func (p *Prober) get(ctx context.Context, ip, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:8080%s", ip, path), nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
