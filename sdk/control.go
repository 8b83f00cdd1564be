package sdk

import (
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk/control"
)

// onControl handles one control message. Whatever it says, it is acked:
// the route machine ignores what is out of place, and a message this
// protocol cannot parse would otherwise come back forever.
func (c *Consumer) onControl(d amqp.Delivery) error {
	c.mu.Lock()
	c.counters.ControlMessages++
	c.mu.Unlock()
	m, err := control.Decode(d.Body)
	switch {
	case err != nil:
		c.mu.Lock()
		c.counters.ControlIgnored++
		c.mu.Unlock()
		c.log.Warn("control message ignored", "err", err)
	case m.Type == control.StartReplay:
		p, _ := m.Replay() // Decode checked it
		c.log.Info("START_REPLAY", "replayQueue", p.Queue)
		c.step(event{kind: evStartReplay, queue: p.Queue})
	case m.Type == control.EndReplay:
		c.log.Info("END_REPLAY")
		c.step(event{kind: evEndReplay})
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack control message: %w", err)
	}
	return nil
}
