package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk"
)

// Options of one demo run.
type Options struct {
	Client   client.Client
	Workload Workload
	// AMQPURL is the broker as this process reaches it; ManagementURL its
	// management API (for the controller).
	AMQPURL, ManagementURL string
	Exchange               string
	// Spec is the migration to run; the demo fills sourcePod and the
	// message queue.
	Spec v1alpha1.StatefulMigrationSpec
	// Rate is the steady producer's messages per second (0: none after
	// the burst).
	Rate int
	// Burst messages are published at once before the steady rate.
	Burst int
	// Routes are more routing keys the queue is bound with (besides its
	// own name, which the migration's routingKey names); the producer
	// publishes round robin over all of them, in one sequence.
	Routes []string
	// RestartProducer stops the producer halfway through the warmup and
	// starts another (a restarted producer: a new identity, its sequence
	// from 1 again).
	RestartProducer bool
	Warmup          time.Duration
	// Settle is how long the producer keeps going after the migration.
	Settle  time.Duration
	Timeout time.Duration
	Out     io.Writer
	// Migrations is how many migrations run back to back, each moving the
	// workload to the other node (0 or 1: one); AfterEach, if set, sees
	// each once it has ended (a soak samples its resources there).
	Migrations int
	AfterEach  func(ctx context.Context, i int, m *v1alpha1.StatefulMigration) error
	// During, if set, sees the migration each time it is looked at until
	// it ends: a test acts on it there (cuts a link at a given step).
	During func(ctx context.Context, m *v1alpha1.StatefulMigration)
	// Trigger, if set, starts the migration of the source pod (a drain
	// that evicts it, say) instead of creating one, and names the
	// migration to follow; it may appear only later.
	Trigger func(ctx context.Context, namespace, source string, spec v1alpha1.StatefulMigrationSpec) (migration string, err error)
}

// Result is what a run measured.
type Result struct {
	Migration *v1alpha1.StatefulMigration
	// Serving is the pod whose state was checked: the target, or the
	// source of a migration that rolled back.
	Serving            string
	Measures           Measures
	Published, Applied int64
	Lost, Duplicated   int64
	DigestMatch        bool
	Reference, Digest  string
	// AtLeastOnce: the consumer does not de-duplicate (a workload without
	// the SDK): Lost counts what it never saw, Duplicated what it saw
	// again, and no digest is kept.
	AtLeastOnce    bool
	SteadyInterval time.Duration
	StateIntact    bool
	// Failures counts the migrations that failed (rolled back or failed
	// forward), the last included.
	Failures int
}

// Run prepares the workload, produces, migrates, and measures.
func Run(ctx context.Context, o Options) (*Result, error) {
	w := o.Workload
	c := o.Client
	if err := clearNamespace(ctx, c, w.Namespace); err != nil {
		return nil, err
	}
	if err := resetStream(o.AMQPURL, o.Exchange, w.Queue, o.Routes); err != nil {
		return nil, err
	}
	source, err := w.Create(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("starting the %s consumer: %w", w.Kind, err)
	}
	fmt.Fprintf(o.Out, "consumer %s/%s (%s) runs on %s\n", w.Namespace, source, w.Kind, w.Node)
	// Anything else consuming the queue (a workload left from another run
	// on the same queue name) would take messages the digest expects.
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		n, err := queueConsumers(o.AMQPURL, w.Queue)
		if err == nil && n > 1 {
			err = fmt.Errorf("queue %s has %d consumers: something besides %s consumes it", w.Queue, n, source)
		}
		return n == 1, err
	}); err != nil {
		return nil, err
	}

	prober := NewProber(c, w.Namespace, w.Name)
	pctx, stopProbe := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() { defer pwg.Done(); prober.Run(pctx) }()
	defer func() { stopProbe(); pwg.Wait() }()

	prod, err := startProducer(ctx, o.AMQPURL, o.Exchange, append([]string{w.Queue}, o.Routes...), o.Burst, o.Rate)
	if err != nil {
		return nil, err
	}
	defer prod.stop()
	if o.Burst > 0 {
		fmt.Fprintf(o.Out, "published a burst of %d message(s); ", o.Burst)
	}
	fmt.Fprintf(o.Out, "producing %d msg/s; warming up %s\n", o.Rate, o.Warmup)
	var stopped []sdk.Published
	if o.RestartProducer {
		sleep(ctx, o.Warmup/2)
		stopped = append(stopped, prod.stop())
		if prod, err = startProducer(ctx, o.AMQPURL, o.Exchange, append([]string{w.Queue}, o.Routes...), 0, o.Rate); err != nil {
			return nil, err
		}
		defer prod.stop()
		fmt.Fprintf(o.Out, "producer restarted after %d message(s), as a new producer\n", stopped[0].LastSeq)
		sleep(ctx, o.Warmup-o.Warmup/2)
	} else {
		sleep(ctx, o.Warmup)
	}
	prober.ResetGap()

	// Each migration moves the workload from where it serves to the other
	// node; one that rolls back leaves it where it was.
	here, there := w.Node, o.Spec.TargetNode
	var m *v1alpha1.StatefulMigration
	var failed error
	res := &Result{}
	for i := range max(o.Migrations, 1) {
		if m, err = migrate(ctx, o, source, there); err != nil {
			if m == nil {
				return nil, err
			}
			res.Migration = m // stuck: the caller shows where
			return res, err
		}
		res.Migration, res.Serving, failed = m, m.Status.TargetPod, nil
		if m.Status.Phase == v1alpha1.PhaseCompleted {
			// A source that let go of its queue serves HTTP after the
			// migration completed, until the target is confirmed in its
			// Services: the probes go on until it has gone.
			if m, err = waitRetired(ctx, c, m); err != nil {
				return res, err
			}
			res.Migration = m
		}
		if m.Status.Phase == v1alpha1.PhaseFailed {
			failed = fmt.Errorf("migration failed in %s: %s: %s", m.Status.FailedPhase, m.Status.FailureReason, m.Status.FailureMessage)
			switch {
			case rolledBack(m):
				// The source must have served on, nothing lost.
				res.Serving = source
				fmt.Fprintf(o.Out, "%v\nrolled back: checking that %s kept serving\n", failed, source)
			case m.Status.TargetPod != "" && migration.PastPointOfNoReturn(&m.Status):
				// Failed forward (a failed identity swap, say): the target
				// serves on in the source's place, nothing lost.
				fmt.Fprintf(o.Out, "%v\nfailed forward: checking that %s serves\n", failed, res.Serving)
			default:
				return res, failed
			}
			res.Failures++
		}
		if res.Serving != source {
			source, here, there = res.Serving, there, here
		}
		if o.AfterEach != nil {
			if err := o.AfterEach(ctx, i, m); err != nil {
				return res, errors.Join(failed, err)
			}
		}
	}
	sleep(ctx, o.Settle)
	res.Published, res.Reference = reference(append(stopped, prod.stop()))
	res.Measures = prober.Measures()
	stopProbe()
	pwg.Wait()
	if o.Rate > 0 {
		res.SteadyInterval = time.Second / time.Duration(o.Rate)
	}

	// The serving pod must reach the last message (followed through its
	// cheap /progress); then its state is checked once, through /state.
	ip, err := podIP(ctx, c, w.Namespace, res.Serving)
	if err != nil {
		return res, errors.Join(failed, err)
	}
	// Above the consumer's capacity its backlog takes as long as it takes:
	// wait while it advances, give up when it stops.
	var st State
	progress, last := time.Now(), int64(-1)
	err = poll(ctx, 24*time.Hour, func() (bool, error) {
		if err := prober.get(ctx, ip, "/progress", &st); err == nil && st.LastSeq != last {
			last, progress = st.LastSeq, time.Now()
		}
		if time.Since(progress) > catchUpStall {
			return false, fmt.Errorf("no message applied for %s", catchUpStall)
		}
		return st.LastSeq >= res.Published, nil
	})
	if err != nil {
		return res, errors.Join(failed, fmt.Errorf("%s did not reach seq %d (at %d): %w", res.Serving, res.Published, st.LastSeq, err))
	}
	st = State{}
	if err := poll(ctx, 30*time.Second, func() (bool, error) { return prober.get(ctx, ip, "/state", &st) == nil, nil }); err != nil {
		return res, errors.Join(failed, fmt.Errorf("reading the state of %s: %w", res.Serving, err))
	}
	res.Applied, res.Digest, res.StateIntact = st.Processed, st.Digest, st.State.Intact
	if st.Digest == "" && st.Contiguous != nil {
		res.AtLeastOnce = true
		res.Lost, res.Duplicated = max(res.Published-*st.Contiguous, 0), st.Repeats
		return res, failed
	}
	res.Lost = st.Counters.Missing + max(res.Published-st.LastSeq, 0)
	res.Duplicated = max(st.Processed-st.Unsequenced-(st.LastSeq-st.Counters.Missing), 0)
	res.DigestMatch = st.Digest == res.Reference && st.LastSeq == res.Published
	return res, failed
}

// migrate moves source to target and waits until the migration ends.
func migrate(ctx context.Context, o Options, source, target string) (*v1alpha1.StatefulMigration, error) {
	c, w := o.Client, o.Workload
	spec := o.Spec
	spec.SourcePod, spec.TargetNode = source, target
	spec.MessageQueueConfig = &v1alpha1.MessageQueueConfig{BrokerURL: o.AMQPURL, ManagementURL: o.ManagementURL,
		QueueName: w.Queue, ExchangeName: o.Exchange, RoutingKey: w.Queue}
	m := &v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: migrationName(source), Namespace: w.Namespace}, Spec: spec}
	var err error
	if o.Trigger != nil {
		if m.Name, err = o.Trigger(ctx, w.Namespace, source, spec); err != nil {
			return nil, err
		}
		fmt.Fprintf(o.Out, "%s will be migrated as %s\n", source, m.Name)
	} else {
		// A source whose last migration rolled back is moved again under
		// a name of its own: the failed one stays for whoever looks.
		err := c.Create(ctx, m)
		for attempt := 2; apierrors.IsAlreadyExists(err) && attempt <= maxAttempts; attempt++ {
			m.Name = attemptName(migrationName(source), attempt)
			err = c.Create(ctx, m)
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(o.Out, "migrating %s to %s (%s, %s transfer, %s replay)\n", source, spec.TargetNode,
			orAuto(string(spec.MigrationStrategy)), spec.EffectiveTransferMode(), spec.EffectiveReplayMode())
	}
	if err := poll(ctx, o.Timeout, func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(m), m)
		if apierrors.IsNotFound(err) && o.Trigger != nil {
			return false, nil // not started yet
		}
		if err != nil {
			return false, err
		}
		if o.During != nil && !m.Status.Phase.IsFinal() {
			o.During(ctx, m)
		}
		return m.Status.Phase.IsFinal(), nil
	}); err != nil {
		return m, fmt.Errorf("migration %s: %w (phase %s)", m.Name, err, m.Status.Phase)
	}
	return m, nil
}

// migrationName is "demo-" and the source's name, shortened with a hash
// where that exceeds the 63 characters a migration's name may have (a pod
// migrated again and again carries a suffix per migration).
func migrationName(source string) string {
	name := "demo-" + source
	if len(name) <= 63 {
		return name
	}
	h := sha256.Sum256([]byte(source))
	return name[:54] + "-" + hex.EncodeToString(h[:4])
}

// maxAttempts bounds the migrations of one source under one name.
const maxAttempts = 20

// attemptName is name with the attempt's number, within 63 characters.
func attemptName(name string, attempt int) string {
	suffix := "-" + strconv.Itoa(attempt)
	return name[:min(len(name), 63-len(suffix))] + suffix
}

// catchUpStall is how long the serving pod may apply nothing before the
// run stops waiting for it to reach the producer's last message.
const catchUpStall = 30 * time.Second

func rolledBack(m *v1alpha1.StatefulMigration) bool {
	c := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionRolledBack)
	return c != nil && c.Status == metav1.ConditionTrue
}

type producer struct {
	pub    *sdk.Publisher
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startProducer publishes burst messages at once (confirmed before it
// returns), then rate per second until stopped, round robin over keys.
func startProducer(ctx context.Context, amqpURL, exchange string, keys []string, burst, rate int) (*producer, error) {
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: amqpURL, Exchange: exchange, RoutingKey: keys[0], ConnectionName: "ms2m demo producer"})
	if err != nil {
		return nil, err
	}
	n := 0
	send := func(ctx context.Context) error {
		n++
		_, err := pub.PublishRouted(ctx, keys[n%len(keys)], nil, fmt.Appendf(nil, `{"order":%d}`, n))
		return err
	}
	for range burst {
		if err := send(ctx); err != nil {
			return nil, err
		}
	}
	if err := pub.Flush(ctx); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &producer{pub: pub, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if rate <= 0 {
			<-pctx.Done()
			return
		}
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
				if err := send(pctx); err != nil && !errors.Is(err, context.Canceled) {
					return
				}
			}
		}
	}()
	return p, nil
}

// reference is what the producers' broker confirmed: the messages
// published (the sum of each producer's last sequence number, as a
// consumer's lastSeq sums them) and the digest a consumer that applied
// them all must have.
func reference(states []sdk.Published) (int64, string) {
	states = slices.DeleteFunc(states, func(s sdk.Published) bool { return s.LastSeq == 0 && len(states) > 1 })
	if len(states) == 1 {
		return states[0].LastSeq, states[0].Digest.String()
	}
	pos := map[string]sdk.Position{}
	var last int64
	for _, st := range states {
		pos[st.ProducerID] = sdk.Position{LastSeq: st.LastSeq, Digest: st.Digest}
		last += st.LastSeq
	}
	return last, sdk.CombineDigests(pos).String()
}

// stop ends publishing, waits for every confirm and returns what the
// broker confirmed: the reference.
func (p *producer) stop() sdk.Published {
	p.once.Do(func() {
		p.cancel()
		<-p.done
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.pub.Flush(fctx)
		_ = p.pub.Close()
	})
	return p.pub.State()
}

// resetStream declares the exchange, and the queue afresh (empty), bound by
// the queue's name.
func queueConsumers(amqpURL, queue string) (int, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return 0, fmt.Errorf("broker at %s: %w", redact(amqpURL), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	return q.Consumers, err
}

func resetStream(amqpURL, exchange, queue string, routes []string) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return fmt.Errorf("broker at %s: %w", redact(amqpURL), err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return err
	}
	for _, key := range append([]string{queue}, routes...) {
		if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
			return err
		}
	}
	return nil
}

func podIP(ctx context.Context, c client.Client, ns, name string) (string, error) {
	p := &corev1.Pod{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		return "", err
	}
	return p.Status.PodIP, nil
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "<broker>"
	}
	return p.Redacted()
}

func orAuto(s string) string {
	if s == "" {
		return "auto strategy"
	}
	return s
}

// Report prints the run in words, and last a machine-readable line.
func Report(w io.Writer, r *Result) {
	m := r.Migration
	st := &m.Status
	fmt.Fprintf(w, "\nmigration %s: %s, %s -> %s (%s), %s, %s transfer, %s\n", m.Name, st.Phase, st.SourceNode, st.TargetNode, st.TargetPod, st.Plan.Strategy, st.Plan.TransferMode, handoffName(st))
	total := time.Duration(0)
	if st.TotalDuration != nil {
		total = st.TotalDuration.Duration
	}
	for _, pt := range st.PhaseTimings {
		d := time.Duration(0)
		if pt.Duration != nil {
			d = pt.Duration.Duration
		}
		share := 0.0
		if total > 0 {
			share = 100 * float64(d) / float64(total)
		}
		fmt.Fprintf(w, "  %-14s %8s  %4.1f%%\n", pt.Phase, ms(d), share)
	}
	fmt.Fprintf(w, "  %-14s %8s\n", "total", ms(total))
	if ck := st.Checkpoint; ck != nil {
		held := ""
		switch {
		case st.Plan.HoldSource && st.Plan.Strategy == v1alpha1.StrategyShadowPod:
			held = ", then held until its queue was taken from it"
		case st.Plan.HoldSource:
			held = ", then held until stopped"
		}
		switch {
		case st.Plan.MemoryTechnique == v1alpha1.MemoryPostCopy && st.Plan.Strategy == v1alpha1.StrategySequential:
			held = ", then held while its pages went to the target (post-copy)"
		case st.Plan.MemoryTechnique == v1alpha1.MemoryPostCopy:
			held += "; its pages went to the target from the dump (post-copy)"
		case st.Plan.MemoryTechnique == v1alpha1.MemoryStream && st.Transfer != nil:
			held += fmt.Sprintf("; its %d bytes of pages went to the target's page server as they were dumped (stream)", st.Transfer.PageBytes)
		}
		fmt.Fprintf(w, "checkpoint: %d bytes by %s, source frozen %s%s\n", ck.SizeBytes, st.Plan.CheckpointEngine, durMS(ck.FreezeDuration), held)
	}
	mm := r.Measures
	fmt.Fprintf(w, "service downtime: %s (%d of %d probes failed; /healthz every 10 ms, 1 s timeout)\n", ms(mm.Downtime), mm.Failures, mm.Probes)
	start := time.Time{}
	if st.StartTime != nil {
		start = st.StartTime.Time
	}
	for _, o := range mm.Outages {
		fmt.Fprintf(w, "  outage at +%s (endpoint %s): %s\n", ms(o.At.Sub(start)), o.Endpoint, o.Error)
	}
	fmt.Fprintf(w, "longest stall:    %s (slowest answered probe)\n", ms(mm.MaxStall))
	fmt.Fprintf(w, "processing gap:   %s (longest time without a new message applied; steady state %s)\n", ms(mm.MaxGap), ms(r.SteadyInterval))
	if mm.MaxGap > 0 && !mm.GapFrom.IsZero() {
		fmt.Fprintf(w, "  from +%s, between messages %d and %d\n", ms(mm.GapFrom.Sub(start)), mm.GapSeqs[0], mm.GapSeqs[1])
	}
	if d := st.Downtime; d != nil {
		fmt.Fprintf(w, "controller:       handoff gap %s, unavailable %s\n", durMS(d.HandoffGap), durMS(d.Unavailable))
	}
	if msgs := st.Messages; msgs != nil {
		fmt.Fprintf(w, "replay:           %d buffered, %d replayed\n", msgs.Buffered, msgs.Replayed)
	}
	match := "mismatch"
	if r.DigestMatch {
		match = "match"
	}
	if r.AtLeastOnce {
		match = "none"
		fmt.Fprintf(w, "messages:         %d published, %d applied by %s, %d never seen, %d seen again (a workload without the SDK: at least once)\n", r.Published, r.Applied, r.Serving, r.Lost, r.Duplicated)
	} else {
		fmt.Fprintf(w, "messages:         %d published, %d applied by %s, %d lost, %d duplicated; memory intact: %v\n", r.Published, r.Applied, r.Serving, r.Lost, r.Duplicated, r.StateIntact)
		fmt.Fprintf(w, "digest:           %s (consumer %.16s..., reference %.16s...)\n", match, r.Digest, r.Reference)
	}
	fmt.Fprintf(w, "RESULT strategy=%s transfer=%s lost=%d duplicated=%d digest=%s downtime_ms=%d stall_ms=%d gap_ms=%d total_ms=%d phase=%s\n",
		st.Plan.Strategy, st.Plan.TransferMode, r.Lost, r.Duplicated, match, mm.Downtime.Milliseconds(), mm.MaxStall.Milliseconds(), mm.MaxGap.Milliseconds(), total.Milliseconds(), st.Phase)
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func durMS(d *metav1.Duration) string {
	if d == nil {
		return "-"
	}
	return ms(d.Duration)
}

// handoffName says how the stream was handed over.
func handoffName(st *v1alpha1.StatefulMigrationStatus) string {
	if st.Plan.Handoff == v1alpha1.HandoffHandoff {
		return "Handoff (no replay)"
	}
	return string(st.Plan.ReplayMode) + " replay"
}

// retirePatience bounds the wait for a completed migration's source to be
// removed and its target handed to the source's owner.
const retirePatience = 30 * time.Second

// waitRetired waits until a completed migration has handed its target to
// the source's owner (OwnershipTransferred True) or said why not.
func waitRetired(ctx context.Context, c client.Client, m *v1alpha1.StatefulMigration) (*v1alpha1.StatefulMigration, error) {
	err := poll(ctx, retirePatience, func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(m.Status.Conditions, v1alpha1.ConditionOwnershipTransferred)
		return cond != nil && (cond.Status == metav1.ConditionTrue || cond.Reason == v1alpha1.ReasonTargetLost), nil
	})
	if err != nil {
		return m, fmt.Errorf("migration %s completed, but its source was not retired: %w", m.Name, err)
	}
	return m, nil
}
