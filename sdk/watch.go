package sdk

// checkIdentity re-reads the identity files; true when they name a new pod,
// which puts the consumer in AwaitingReplay.
func (c *Consumer) checkIdentity() bool {
	id, err := c.cfg.Identity.Read()
	if err != nil {
		if err.Error() != c.identityErr {
			c.log.Warn("cannot read identity", "err", err)
		}
		c.identityErr = err.Error()
		return false
	}
	c.identityErr = ""
	c.mu.Lock()
	from := c.known
	changed := from.Differs(id)
	if changed {
		c.known = id
		c.counters.Restores++
	} else {
		// Learn what was missing; never forget what was known (a file being
		// swapped may be briefly absent).
		if id.UID != "" {
			c.known.UID = id.UID
		}
		if id.Name != "" {
			c.known.Name = id.Name
		}
	}
	c.mu.Unlock()
	if changed {
		c.log.Info("restored into a new pod: waiting for START_REPLAY", "from", from, "to", id)
		if h := c.cfg.Hooks.Restored; h != nil {
			h(from, id)
		}
		c.step(event{kind: evRestored})
	}
	return changed
}

func (c *Consumer) identity() Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known
}
