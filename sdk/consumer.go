package sdk

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ms2m/ms2m/sdk/control"
)

// Consumer applies a queue's messages through a Handler, exactly once per
// sequence number, and follows the MS2M control protocol across a live
// migration. See the package documentation for the handoff it implements.
type Consumer struct {
	cfg Config
	log *slog.Logger

	// applyMu is held while a message is applied, so that Snapshot and
	// Inspect never see the application's state and the snapshot disagree.
	applyMu sync.Mutex

	mu        sync.Mutex // guards the fields below
	snap      Snapshot
	counters  Counters
	route     route
	boot      Identity // identity at construction, for display
	known     Identity // last identity seen: a difference is a restore
	connected bool
	control   string // control queue consumed by the current session
	running   bool
	// reply is where the controller asked for reports (START_REPLAY's
	// replyTo); atReplay the counters then, so that a report counts the
	// handoff alone; outbox the reports not yet sent.
	reply    string
	atReplay Counters
	outbox   []control.Report
	replyTo  []string // replyTo[i] is where outbox[i] goes
	// release is the RELEASE to answer once the primary queue's consumer
	// is gone.
	release *control.ReleasePayload

	// owned by Run's goroutine
	retryAt     time.Time
	retry       backoff
	identityErr string
}

// Status is a consumer's observable state.
type Status struct {
	Snapshot
	Mode Mode `json:"mode"`
	// ReplayQueue is being replayed or drained (Replaying, Draining).
	ReplayQueue string `json:"replayQueue,omitempty"`
	// Queue is the primary queue; ControlQueue the control queue of the
	// current pod.
	Queue        string   `json:"queue"`
	ControlQueue string   `json:"controlQueue,omitempty"`
	Identity     Identity `json:"identity"`
	BootIdentity Identity `json:"bootIdentity"`
	Connected    bool     `json:"connected"`
	Counters     Counters `json:"counters"`
}

// NewConsumer checks cfg and reads the identity the consumer boots with.
// Nothing touches the broker before Run.
func NewConsumer(cfg Config) (*Consumer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	id, err := cfg.Identity.Read()
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg:   cfg,
		log:   cfg.Logger.With("queue", cfg.Queue),
		boot:  id,
		known: id,
		retry: backoff{min: cfg.RetryMin, max: cfg.ReconnectMax},
	}
	if id.UID == "" {
		c.log.Warn("no pod UID in " + cfg.Identity.UID + ": a restore into a pod of the same name (Sequential) will go unnoticed")
	}
	if cfg.Restore != nil {
		c.snap = *cfg.Restore
		c.route = route{mode: AwaitingReplay}
	}
	return c, nil
}

// Run consumes until ctx ends, reconnecting after every broker failure; it
// returns nil then. It may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("sdk: Consumer.Run called twice")
	}
	c.running = true
	c.mu.Unlock()

	bo := backoff{min: c.cfg.ReconnectMin, max: c.cfg.ReconnectMax}
	for sessions := 0; ctx.Err() == nil; {
		c.checkIdentity()
		err := c.session(ctx, &bo, &sessions)
		c.mu.Lock()
		c.connected, c.control = false, ""
		c.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
		if h := c.cfg.Hooks.Disconnected; h != nil {
			h(err)
		}
		if errors.Is(err, errRestored) {
			// Reconnect at once: the new pod's control queue is where the
			// controller will speak.
			continue
		}
		c.log.Warn("broker session ended; reconnecting", "err", err)
		if !sleepCtx(ctx.Done(), bo.next()) {
			break
		}
	}
	return nil
}

// Snapshot is the consumer's position. It waits for the message being
// applied, if any, so it matches the application's state.
func (c *Consumer) Snapshot() Snapshot {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// Inspect calls fn between two messages, with the snapshot: fn sees the
// application's state exactly as of that snapshot. fn must not block.
func (c *Consumer) Inspect(fn func(Snapshot)) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	s := c.snap
	c.mu.Unlock()
	fn(s)
}

// Mode is the consumer's current mode.
func (c *Consumer) Mode() Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.route.mode
}

// Counters are the consumer's counters.
func (c *Consumer) Counters() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counters
}

// Status never waits for the handler: its snapshot may be one message behind
// the application's state.
func (c *Consumer) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{
		Snapshot:     c.snap,
		Mode:         c.route.mode,
		ReplayQueue:  c.route.replay,
		Queue:        c.cfg.Queue,
		ControlQueue: c.control,
		Identity:     c.known,
		BootIdentity: c.boot,
		Connected:    c.connected,
		Counters:     c.counters,
	}
}

func (c *Consumer) currentRoute() route {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.route
}

// step feeds ev to the route machine and reports what changed.
func (c *Consumer) step(ev event) {
	c.mu.Lock()
	from := c.route
	to, note := from.step(ev)
	c.route = to
	if from.mode == Draining && to.mode == Primary && c.reply != "" {
		c.report(control.ReplayDone, from.replay)
		c.reply = ""
	}
	ignored := note != "" && to == from
	if ignored && (ev.kind == evStartReplay || ev.kind == evEndReplay) {
		c.counters.ControlIgnored++
	}
	c.mu.Unlock()
	if note != "" {
		c.log.Warn(note, "mode", to.mode)
	}
	if to.mode != from.mode {
		c.log.Info("mode "+from.mode.String()+" -> "+to.mode.String(), "replayQueue", to.replay)
		if h := c.cfg.Hooks.ModeChanged; h != nil {
			h(from.mode, to.mode)
		}
	}
}

// startReplay notes where to report a replay of queue and announces it,
// when the controller asked for reports.
func (c *Consumer) startReplay(queue, replyTo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if replyTo == "" || c.route.mode != Replaying || c.route.replay != queue {
		return
	}
	if c.reply != replyTo {
		c.reply, c.atReplay = replyTo, c.counters
	}
	c.report(control.ReplayStarted, queue)
}

// report queues a report of the handoff to c.reply; c.mu is held.
func (c *Consumer) report(typ, replay string) {
	k, at := c.counters, c.atReplay
	c.send(control.Report{Type: typ, Pod: c.known.Name, ReplayQueue: replay,
		Replayed: k.Replayed - at.Replayed, Duplicates: k.Duplicates - at.Duplicates,
		Gaps: k.Gaps - at.Gaps, Missing: k.Missing - at.Missing}, c.reply)
}

// send queues r for the queue to (sendReports publishes it); c.mu is held.
func (c *Consumer) send(r control.Report, to string) {
	c.outbox = append(c.outbox, r)
	c.replyTo = append(c.replyTo, to)
}

// pauseAfterFailure keeps the consumer from taking messages for a while
// after a handler error, doubling while errors repeat.
func (c *Consumer) pauseAfterFailure() { c.retryAt = time.Now().Add(c.retry.next()) }

func (c *Consumer) paused() bool { return time.Now().Before(c.retryAt) }
