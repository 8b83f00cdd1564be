package controller_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker/rabbitmq"
	"github.com/ms2m/ms2m/internal/controller"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// The exactly-once property: whatever the queue, its routes, its producers,
// the consumer's prefetch and speed, the moment a migration starts and the
// techniques it uses, the consumer that serves afterwards has applied every
// message once, in each producer's order, and its digest equals a reference
// computed here from what the broker confirmed.
//
// Each case is drawn from a seed and runs against the real API server,
// controller and RabbitMQ; the node side is simulated (nodesim_test.go),
// as the message handoff is what is under test.
//
//	MS2M_PROPERTY_CASES=N   cases to run (default 200; 3 with -short)
//	MS2M_PROPERTY_SEED=S    the first seed (default: drawn, and printed)
//	MS2M_PROPERTY_REPLAY=S  run the one case of seed S
//
// A failing case is shrunk to the smallest case that still fails, printed
// with the seed that replays it.

// propCase is one situation, drawn from Seed.
type propCase struct {
	Seed      uint64
	Quorum    bool
	Exchanges []string // kinds: direct, topic, fanout, headers
	Bindings  []propBinding
	// Entry routes every producer through a fanout exchange bound to its
	// exchange (exchange-to-exchange).
	Entry      bool
	Producers  []propProducer
	Prefetch   int
	Delay      time.Duration
	StartAfter time.Duration
	Sequential bool
	Drain      bool
	Direct     bool
	// Kubelet dumps with the kubelet's API; otherwise the runc engine,
	// which holds a Sequential source at its checkpoint.
	Kubelet bool
	// Handoff asks for the Handoff technique (runc engine; a ShadowPod
	// source on a classic queue); otherwise Auto.
	Handoff bool
	// PostCopy restores the target before its memory has all come (runc
	// engine; a Sequential source only with Handoff or Auto): the pages
	// come PageDelay after the target runs, or with PagesLost (a ShadowPod
	// source, which the migration rolls back to) never.
	PostCopy  bool
	PageDelay time.Duration
	PagesLost bool
	// Stream sends the pages to the target's page server with the dump
	// (runc engine), instead of in the archive.
	Stream bool
}

// propBinding binds the queue to Exchanges[Exchange] with Key (a direct
// key, a topic pattern) or, for headers, Region.
type propBinding struct {
	Exchange int
	Key      string
}

type propProducer struct {
	Exchange int
	// Burst messages go out at once at the start; then Rate msg/s for
	// Duration (0: until the migration ends).
	Burst    int
	Rate     int
	Duration time.Duration
	// Restart: halfway, the producer stops and another takes over, with
	// the same identity and sequence (KeepID) or a new one.
	Restart, KeepID bool
}

func (c propCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d queue=%s exchanges=%v bindings=%v entry=%v prefetch=%d delay=%s start=%s strategy=%s replay=%s transfer=%s producers=[",
		c.Seed, map[bool]string{true: "quorum", false: "classic"}[c.Quorum], c.Exchanges, c.Bindings, c.Entry, c.Prefetch, c.Delay, c.StartAfter,
		map[bool]string{true: "Sequential", false: "ShadowPod"}[c.Sequential], map[bool]string{true: "Drain", false: "Cutoff"}[c.Drain],
		map[bool]string{true: "Direct", false: "Registry"}[c.Direct]+" engine="+map[bool]string{true: "Kubelet", false: "Runc"}[c.Kubelet]+
			" handoff="+map[bool]string{true: "Handoff", false: "Auto"}[c.Handoff]+
			" memory="+c.memory())
	for i, p := range c.Producers {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "{ex%d burst=%d rate=%d for=%s restart=%v keepID=%v}", p.Exchange, p.Burst, p.Rate, p.Duration, p.Restart, p.KeepID)
	}
	b.WriteString("]")
	return b.String()
}

func (c propCase) memory() string {
	switch {
	case c.PostCopy:
		return fmt.Sprintf("PostCopy(pages after %s, lost=%v)", c.PageDelay, c.PagesLost)
	case c.Stream:
		return "Stream"
	}
	return "StopAndCopy"
}

var (
	propKeys   = map[string][]string{"direct": {"eu", "us", "asia"}, "topic": {"eu.*", "us.#", "#"}, "fanout": {""}, "headers": {"eu", "us"}}
	propDelays = []time.Duration{0, 2 * time.Millisecond, 8 * time.Millisecond, 40 * time.Millisecond, 120 * time.Millisecond}
)

// drawCase draws a case from its seed alone.
func drawCase(seed uint64) propCase {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	c := propCase{Seed: seed, Quorum: r.IntN(10) < 4, Entry: r.IntN(10) < 2,
		Sequential: r.IntN(10) < 3, Drain: r.IntN(10) < 3, Direct: r.IntN(2) == 0}
	for range 1 + r.IntN(2) {
		c.Exchanges = append(c.Exchanges, pick([]string{"direct", "topic", "fanout", "headers"}))
	}
	for range 1 + r.IntN(3) {
		e := r.IntN(len(c.Exchanges))
		c.Bindings = append(c.Bindings, propBinding{Exchange: e, Key: pick(propKeys[c.Exchanges[e]])})
	}
	c.Prefetch = []int{1, 2, 5, 10, 20, 50}[r.IntN(6)]
	c.Delay = propDelays[r.IntN(len(propDelays))]
	c.StartAfter = time.Duration(r.IntN(1500)) * time.Millisecond
	capacity := 400.0
	if c.Delay > 0 {
		capacity = min(capacity, float64(time.Second)/float64(c.Delay))
	}
	// Bound the work so that a case stays short: at most ~4 s of the
	// consumer's time in all.
	budget := int(4 * capacity)
	for range 1 + r.IntN(2) {
		// bound producers only: every binding on an exchange with one
		p := propProducer{Exchange: c.Bindings[r.IntN(len(c.Bindings))].Exchange}
		factor := []float64{0.3, 0.8, 1.5, 3}[r.IntN(4)]
		p.Rate = max(2, min(300, int(factor*capacity)/len(c.Exchanges)))
		switch r.IntN(3) {
		case 0:
			p.Duration = 0 // until the migration ends
		case 1:
			p.Duration = time.Duration(500+r.IntN(1500)) * time.Millisecond
		default:
			p.Duration, p.Rate = 0, 0 // a burst alone
		}
		if r.IntN(3) == 0 || p.Rate == 0 {
			p.Burst = 10 + r.IntN(50)
		}
		p.Restart = r.IntN(5) == 0 && p.Rate > 0
		p.KeepID = r.IntN(2) == 0
		c.Producers = append(c.Producers, p)
	}
	// drawn last: the draws above stay what they were for older seeds
	c.Kubelet = r.IntN(2) == 0
	c.Handoff = r.IntN(2) == 0 && !c.Kubelet && (c.Sequential || !c.Quorum)
	c.PostCopy = r.IntN(3) == 0 && !c.Kubelet
	if c.PostCopy {
		c.PageDelay = []time.Duration{0, 300 * time.Millisecond, 1500 * time.Millisecond}[r.IntN(3)]
		// A Sequential source has let go of its pod: a lost stream fails
		// forward with the state lost (documented), nothing to check.
		c.PagesLost = r.IntN(4) == 0 && !c.Sequential
	}
	c.Stream = r.IntN(4) == 0 && !c.Kubelet && !c.PostCopy
	// scale the producers into the budget
	for i := range c.Producers {
		p := &c.Producers[i]
		run := 4 * time.Second
		if p.Duration > 0 {
			run = p.Duration
		}
		total := p.Burst + int(float64(p.Rate)*run.Seconds())
		if share := budget / len(c.Producers); total > share && total > 0 {
			p.Burst = p.Burst * share / total
			p.Rate = max(1, p.Rate*share/total)
		}
	}
	return c
}

// publishKeys are the routing keys (and headers) a producer on exchange e
// publishes with: one that every binding on e matches, so that nothing it
// sends is unroutable.
func (c propCase) publishKeys(e int) []propRoute {
	var out []propRoute
	for _, b := range c.Bindings {
		if b.Exchange != e {
			continue
		}
		switch c.Exchanges[e] {
		case "direct":
			out = append(out, propRoute{key: b.Key})
		case "topic":
			out = append(out, propRoute{key: strings.NewReplacer("*", "x", "#", "any.key").Replace(b.Key)})
		case "fanout":
			out = append(out, propRoute{key: "k"})
		case "headers":
			out = append(out, propRoute{headers: amqp.Table{"region": b.Key}})
		}
	}
	return out
}

type propRoute struct {
	key     string
	headers amqp.Table
}

// propRun is one case being run.
type propRun struct {
	c     propCase
	w     *world
	names []string // exchanges

	mu        sync.Mutex
	confirmed map[string][]pubRecord // by producer ID
	stops     []func()
	wg        sync.WaitGroup
}

func propSetup(t *testing.T, c propCase) *propRun {
	amqpURL, mgmtURL := propURLs(t)
	w := &world{t: t, ns: fmt.Sprintf("prop-%d", worldSeq.Add(1)), amqpURL: amqpURL, mgmtURL: mgmtURL}
	if err := k8s.Create(context.Background(), namespace(w.ns)); err != nil {
		t.Fatal(err)
	}
	w.b = sdktest.Dial(t, amqpURL, mgmtURL)
	run := &propRun{c: c, w: w, confirmed: map[string][]pubRecord{}}
	for i, kind := range c.Exchanges {
		name := w.b.Name(fmt.Sprintf("ex%d", i))
		w.b.ExchangeOfKind(t, name, kind)
		run.names = append(run.names, name)
	}
	w.queue = w.b.Name("q")
	var args amqp.Table
	if c.Quorum {
		args = amqp.Table{"x-queue-type": "quorum"}
	}
	w.b.QueueWithArgs(t, w.queue, args)
	for _, b := range c.Bindings {
		if c.Exchanges[b.Exchange] == "headers" {
			w.b.BindArgs(t, w.queue, run.names[b.Exchange], "", amqp.Table{"x-match": "all", "region": b.Key})
		} else {
			w.b.Bind(t, w.queue, run.names[b.Exchange], b.Key)
		}
	}
	if c.Entry {
		for i, name := range run.names {
			entry := w.b.Name(fmt.Sprintf("entry%d", i))
			w.b.ExchangeOfKind(t, entry, "fanout")
			w.b.BindExchange(t, name, entry, "")
		}
	}
	w.exchange = run.names[c.Bindings[0].Exchange]
	w.sim = newNodeSim(t, k8s, w.ns, amqpURL, w.queue)
	w.sim.delay, w.sim.prefetch = c.Delay, c.Prefetch
	w.sim.pageDelay, w.sim.losePages = c.PageDelay, c.PagesLost
	w.opts = controller.Options{DefaultCheckpointRepository: "registry.test/ckpt", BrokerRetryWindow: 2 * time.Second,
		CaughtUpBelow: 2, Poll: 50 * time.Millisecond}
	return run
}

// produce starts every producer; stop ends the endless ones and waits for
// every confirmation.
func (run *propRun) produce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	run.stops = append(run.stops, cancel)
	for i, p := range run.c.Producers {
		exchange := run.names[p.Exchange]
		if run.c.Entry {
			exchange = run.w.b.Name(fmt.Sprintf("entry%d", p.Exchange))
		}
		routes := run.c.publishKeys(p.Exchange)
		run.wg.Add(1)
		go func() {
			defer run.wg.Done()
			run.producer(ctx, t, i, p, exchange, routes)
		}()
	}
}

func (run *propRun) producer(ctx context.Context, t *testing.T, idx int, p propProducer, exchange string, routes []propRoute) {
	id := fmt.Sprintf("p%d-%d", idx, run.c.Seed)
	var first int64 = 1
	deadline := time.Time{}
	if p.Duration > 0 {
		deadline = time.Now().Add(p.Duration)
	}
	half := p.Duration / 2
	if half == 0 {
		half = run.c.StartAfter + 300*time.Millisecond
	}
	restartAt := time.Now().Add(half)
	n := 0
	for generation := 0; ; generation++ {
		pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: run.w.amqpURL, Exchange: exchange, ProducerID: id, FirstSeq: first,
			ConnectionName: fmt.Sprintf("prop %s producer %s", run.w.ns, id), Logger: quietLogger(),
			Confirmed: func(seq int64, body []byte) {
				run.mu.Lock()
				run.confirmed[id] = append(run.confirmed[id], pubRecord{seq, append([]byte(nil), body...)})
				run.mu.Unlock()
			}})
		if err != nil {
			t.Error(err)
			return
		}
		send := func() bool {
			r := routes[n%len(routes)]
			n++
			_, err := pub.PublishRouted(ctx, r.key, r.headers, fmt.Appendf(nil, "%s/%d", id, n))
			return err == nil
		}
		if generation == 0 {
			for range p.Burst {
				if !send() {
					break
				}
			}
		}
		restart := false
		if p.Rate > 0 {
			tick := time.NewTicker(time.Second / time.Duration(p.Rate))
		loop:
			for {
				select {
				case <-ctx.Done():
					break loop
				case now := <-tick.C:
					if !deadline.IsZero() && now.After(deadline) {
						break loop
					}
					if p.Restart && generation == 0 && now.After(restartAt) {
						restart = true
						break loop
					}
					if !send() {
						break loop
					}
				}
			}
			tick.Stop()
		}
		_ = pub.Flush(context.Background())
		last := pub.State().LastSeq
		_ = pub.Close()
		if !restart {
			return
		}
		if p.KeepID {
			first = last + 1
		} else {
			id, first = fmt.Sprintf("p%d-%d-restarted", idx, run.c.Seed), 1
		}
	}
}

func (run *propRun) stopProducers() {
	for _, s := range run.stops {
		s()
	}
	run.wg.Wait()
}

// reference is every producer's last sequence number and the combined
// digest over what the broker confirmed, computed from the definitions in
// sdk/digest.go and sdk/snapshot.go, not with the SDK's code.
func (run *propRun) reference() (map[string]int64, string) {
	run.mu.Lock()
	defer run.mu.Unlock()
	last := map[string]int64{}
	digests := map[string][]byte{}
	for id, recs := range run.confirmed {
		last[id], digests[id] = referenceChain(recs)
	}
	if len(digests) == 0 {
		return last, hex.EncodeToString(make([]byte, sha256.Size))
	}
	if len(digests) == 1 {
		for _, d := range digests {
			return last, hex.EncodeToString(d)
		}
	}
	ids := make([]string, 0, len(digests))
	for id := range digests {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range ids {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(id)))
		h.Write(n[:])
		h.Write([]byte(id))
		h.Write(digests[id])
	}
	return last, hex.EncodeToString(h.Sum(nil))
}

// runCase runs c and returns why it broke the property ("" when it held).
func runCase(t *testing.T, c propCase) string {
	t.Logf("case: %s", c)
	run := propSetup(t, c)
	w := run.w
	w.sourcePod("consumer-0")
	run.produce(t)
	defer run.stopProducers()
	time.Sleep(c.StartAfter)
	w.startManager()
	name := w.b.Name("mig")
	for _, pod := range []string{"consumer-0", "consumer-0-shadow"} {
		w.b.DeleteAtCleanup(t, control.QueueName(pod))
		w.b.DeleteAtCleanup(t, control.PodQueueName(w.ns, pod))
	}
	created := w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		mq := s.MessageQueueConfig
		mq.ExchangeName, mq.RoutingKey = w.exchange, c.Bindings[0].Key
		if c.Exchanges[c.Bindings[0].Exchange] == "headers" {
			mq.RoutingKey = ""
		}
		s.ReplayCutoffSeconds = 2
		if c.Sequential {
			s.MigrationStrategy = v1alpha1.StrategySequential
		}
		s.CheckpointEngine = v1alpha1.CheckpointEngineRunc
		if c.Kubelet {
			s.CheckpointEngine = v1alpha1.CheckpointEngineKubelet
		}
		if c.Drain {
			s.ReplayMode = v1alpha1.ReplayDrain
		}
		if c.Handoff {
			s.Handoff = v1alpha1.HandoffHandoff
		}
		if c.Direct {
			s.TransferMode = v1alpha1.TransferDirect
		}
		if c.PostCopy {
			s.MemoryTechnique = v1alpha1.MemoryPostCopy
		}
		if c.Stream {
			s.MemoryTechnique = v1alpha1.MemoryStream
		}
		// above capacity a drain never catches up: bounded, it rolls back
		s.Timeouts = &v1alpha1.MigrationTimeouts{Replay: &metav1.Duration{Duration: 20 * time.Second}}
	})
	// whatever becomes of the case, the broker is left clean for the next
	w.b.DeleteAtCleanup(t, rabbitmq.ReplayQueue(migration.MigrationID(name, string(created.UID))))
	m := w.waitPhase(name, 90*time.Second, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	serving := m.Status.TargetPod
	if m.Status.Phase == v1alpha1.PhaseFailed {
		// rolled back, the source serves; failed forward, the target
		if src := w.sim.pod("consumer-0"); src != nil && src.restored == nil {
			serving = "consumer-0"
		}
		t.Logf("migration failed (%s: %s); %s serves", m.Status.FailureReason, m.Status.FailureMessage, serving)
	}
	run.stopProducers()
	last, digest := run.reference()
	p := w.sim.pod(serving)
	if p == nil {
		return fmt.Sprintf("no workload serves in %s after %s", serving, m.Status.Phase)
	}
	// A backlog above the consumer's capacity takes as long as it takes
	// on a loaded machine: what fails is a consumer that stops advancing.
	const stall = 60 * time.Second
	deadline, progress := time.Now().Add(stall), int64(-1)
	for {
		snap := p.consumer.Snapshot()
		done, at := true, int64(0)
		for id, seq := range last {
			pos := snap.Position(id).LastSeq
			at += pos
			if pos < seq {
				done = false
			}
		}
		if done {
			break
		}
		if at > progress {
			deadline, progress = time.Now().Add(stall), at
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("%s (%s) stopped short of every producer's last message for %s: at %v, want %v", serving, m.Status.Phase, stall, snap.Producers, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range m.Status.Conditions {
		t.Logf("condition %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	var restored sdk.Snapshot
	if p.restored != nil {
		restored = *p.restored
	}
	applied := p.appliedBy()
	for id, seq := range last {
		from := restored.Position(id).LastSeq
		got := applied[id]
		for i, s := range got {
			if want := from + int64(i) + 1; s != want {
				return fmt.Sprintf("%s (%s): producer %s's %d-th message after the checkpoint (at %d) was seq %d, want %d: lost, duplicated or reordered",
					serving, m.Status.Phase, id, i+1, from, s, want)
			}
		}
		if int64(len(got)) != seq-from {
			return fmt.Sprintf("%s: producer %s: applied %d after the checkpoint at %d, want %d", serving, id, len(got), from, seq-from)
		}
	}
	if d := p.consumer.Snapshot().Digest.String(); d != digest {
		return fmt.Sprintf("%s: digest %s, reference %s", serving, d, digest)
	}
	if c := p.consumer.Counters(); c.Gaps != 0 {
		return fmt.Sprintf("%s: %d gap(s), %d message(s) missing", serving, c.Gaps, c.Missing)
	}
	if m.Status.Phase == v1alpha1.PhaseCompleted && !migration.IsTrue(&m.Status, v1alpha1.ConditionStreamIntact) {
		return fmt.Sprintf("completed without the target's report of an intact stream: %+v", m.Status.Messages)
	}
	for _, q := range w.replayQueues() {
		if strings.Contains(q, name) {
			return fmt.Sprintf("replay queue %s left behind", q)
		}
	}
	w.sim.mu.Lock()
	defer w.sim.mu.Unlock()
	if len(w.sim.violations) > 0 {
		return strings.Join(w.sim.violations, "; ")
	}
	return ""
}

// shrinks lists simpler neighbours of c, the most simplifying first.
func shrinks(c propCase) []propCase {
	var out []propCase
	try := func(f func(*propCase) bool) {
		n := c
		n.Exchanges = slices.Clone(c.Exchanges)
		n.Bindings = slices.Clone(c.Bindings)
		n.Producers = slices.Clone(c.Producers)
		if f(&n) {
			out = append(out, n)
		}
	}
	try(func(n *propCase) bool {
		if len(n.Producers) < 2 {
			return false
		}
		n.Producers = n.Producers[:1]
		return true
	})
	for i := range c.Bindings {
		try(func(n *propCase) bool {
			if len(n.Bindings) < 2 {
				return false
			}
			n.Bindings = slices.Delete(n.Bindings, i, i+1)
			for _, p := range n.Producers {
				if len(n.publishKeys(p.Exchange)) == 0 {
					return false
				}
			}
			return true
		})
	}
	flags := []struct {
		on  func(*propCase) *bool
		off bool
	}{
		{func(n *propCase) *bool { return &n.Entry }, false},
		{func(n *propCase) *bool { return &n.Quorum }, false},
		{func(n *propCase) *bool { return &n.Handoff }, false},
		{func(n *propCase) *bool { return &n.Sequential }, false},
		{func(n *propCase) *bool { return &n.Drain }, false},
		{func(n *propCase) *bool { return &n.Direct }, false},
		{func(n *propCase) *bool { return &n.Kubelet }, false},
		{func(n *propCase) *bool { return &n.PagesLost }, false},
		{func(n *propCase) *bool { return &n.PostCopy }, false},
		{func(n *propCase) *bool { return &n.Stream }, false},
	}
	for _, f := range flags {
		try(func(n *propCase) bool {
			if *f.on(n) == f.off {
				return false
			}
			*f.on(n) = f.off
			return true
		})
	}
	for i := range c.Producers {
		try(func(n *propCase) bool {
			if !n.Producers[i].Restart {
				return false
			}
			n.Producers[i].Restart = false
			return true
		})
		try(func(n *propCase) bool {
			if n.Producers[i].Rate == 0 || n.Producers[i].Burst == 0 {
				return false
			}
			n.Producers[i].Rate, n.Producers[i].Duration = 0, 0
			return true
		})
	}
	try(func(n *propCase) bool {
		if n.Prefetch == 1 {
			return false
		}
		n.Prefetch /= 2
		return true
	})
	try(func(n *propCase) bool {
		if n.StartAfter == 0 {
			return false
		}
		n.StartAfter = 0
		return true
	})
	return out
}

func TestExactlyOnceProperty(t *testing.T) {
	cases, first := 200, rand.Uint64()%1_000_000
	if testing.Short() {
		cases = 3
	}
	if v := os.Getenv("MS2M_PROPERTY_CASES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("MS2M_PROPERTY_CASES=%q: %v", v, err)
		}
		cases = n
	}
	if v := os.Getenv("MS2M_PROPERTY_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MS2M_PROPERTY_SEED=%q: %v", v, err)
		}
		first = s
	}
	if v := os.Getenv("MS2M_PROPERTY_REPLAY"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MS2M_PROPERTY_REPLAY=%q: %v", v, err)
		}
		first, cases = s, 1
	}
	t.Logf("%d case(s) from seed %d (replay one with MS2M_PROPERTY_REPLAY=<seed>)", cases, first)
	for i := range cases {
		seed := first + uint64(i)
		c := drawCase(seed)
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			why := runInSubtest(t, c)
			if why == "" {
				return
			}
			t.Errorf("%s\n  case: %s\n  replay: MS2M_PROPERTY_REPLAY=%d", why, c, seed)
			if os.Getenv("MS2M_PROPERTY_NO_SHRINK") != "" {
				return
			}
			small := shrink(t, c)
			t.Errorf("shrunk to: %s", small)
		})
	}
}

// runInSubtest runs c in a test of its own, so that its resources are
// released before the next one, and returns why it failed.
func runInSubtest(t *testing.T, c propCase) (why string) {
	t.Run("run", func(t *testing.T) {
		why = runCase(t, c)
		if t.Failed() && why == "" {
			why = "the case's test failed (see above)"
		}
	})
	return why
}

// shrink walks to simpler cases while they still fail (each tried once:
// a timing-dependent failure may not repeat, so the result is the
// simplest case seen failing).
func shrink(t *testing.T, c propCase) propCase {
	for step := 0; step < 12; step++ {
		progressed := false
		for _, n := range shrinks(c) {
			var why string
			t.Run(fmt.Sprintf("shrink-%d", step), func(t *testing.T) {
				why = runCase(t, n)
			})
			if why != "" {
				t.Logf("still fails (%s): %s", why, n)
				c, progressed = n, true
				break
			}
		}
		if !progressed {
			return c
		}
	}
	return c
}

func propURLs(t *testing.T) (string, string) {
	return testenv.AMQPURL(t), testenv.RabbitMQManagementURL(t)
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
