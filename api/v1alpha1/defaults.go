package v1alpha1

import (
	"net/url"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults applied by the controller when a field is left empty. They are
// resolved into status rather than written back into the spec, so a
// manifest reads the same after it is applied.
const (
	DefaultReplayCutoff      = 120 * time.Second
	DefaultTotalTimeout      = 20 * time.Minute
	DefaultCheckpointTimeout = 2 * time.Minute
	DefaultTransferTimeout   = 5 * time.Minute
	DefaultRestoreTimeout    = 3 * time.Minute
	DefaultReplayTimeout     = 10 * time.Minute
	DefaultFinalizeTimeout   = 3 * time.Minute
)

// ReplayCutoff is the effective replay bound of replayMode Cutoff.
func (s *StatefulMigrationSpec) ReplayCutoff() time.Duration {
	if s.ReplayCutoffSeconds > 0 {
		return time.Duration(s.ReplayCutoffSeconds) * time.Second
	}
	return DefaultReplayCutoff
}

// EffectiveReplayMode is spec.replayMode or its default, Cutoff.
func (s *StatefulMigrationSpec) EffectiveReplayMode() ReplayMode {
	if s.ReplayMode == "" {
		return ReplayCutoff
	}
	return s.ReplayMode
}

// EffectiveTransferMode is spec.transferMode or its default, Registry.
func (s *StatefulMigrationSpec) EffectiveTransferMode() TransferMode {
	if s.TransferMode == "" {
		return TransferRegistry
	}
	return s.TransferMode
}

// EffectiveOtherContainers is spec.otherContainers or its default,
// Checkpoint.
func (s *StatefulMigrationSpec) EffectiveOtherContainers() OtherContainersMode {
	if s.OtherContainers == "" {
		return OtherContainersCheckpoint
	}
	return s.OtherContainers
}

// EffectiveIdentitySwapMode is spec.identitySwapMode or its default, None.
func (s *StatefulMigrationSpec) EffectiveIdentitySwapMode() IdentitySwapMode {
	if s.IdentitySwapMode == "" {
		return IdentitySwapNone
	}
	return s.IdentitySwapMode
}

// IsAutoStrategy reports whether the strategy is left to ms2m.
func (s *StatefulMigrationSpec) IsAutoStrategy() bool {
	return s.MigrationStrategy == "" || s.MigrationStrategy == "auto" || s.MigrationStrategy == StrategyAuto
}

// PhaseTimeout is the time budget of a phase (0 for Pending and the final
// phases, which have none).
func (s *StatefulMigrationSpec) PhaseTimeout(p Phase) time.Duration {
	t := s.Timeouts
	if t == nil {
		t = &MigrationTimeouts{}
	}
	switch p {
	case PhaseCheckpointing:
		return orDefault(t.Checkpoint, DefaultCheckpointTimeout)
	case PhaseTransferring:
		return orDefault(t.Transfer, DefaultTransferTimeout)
	case PhaseRestoring:
		return orDefault(t.Restore, DefaultRestoreTimeout)
	case PhaseReplaying:
		return orDefault(t.Replay, DefaultReplayTimeout)
	case PhaseFinalizing:
		return orDefault(t.Finalize, DefaultFinalizeTimeout)
	}
	return 0
}

// TotalTimeout is the time budget of the whole migration.
func (s *StatefulMigrationSpec) TotalTimeout() time.Duration {
	if s.Timeouts == nil {
		return DefaultTotalTimeout
	}
	return orDefault(s.Timeouts.Total, DefaultTotalTimeout)
}

// BrokerURLHasPassword reports whether brokerUrl carries a password, which
// belongs in credentialsSecretRef instead.
func (c *MessageQueueConfig) BrokerURLHasPassword() bool {
	u, err := url.Parse(c.BrokerURL)
	if err != nil || u.User == nil {
		return false
	}
	_, has := u.User.Password()
	return has
}

// RedactedBrokerURL is brokerUrl with any password replaced, safe for
// status, Events and logs.
func (c *MessageQueueConfig) RedactedBrokerURL() string {
	u, err := url.Parse(c.BrokerURL)
	if err != nil {
		return "<unparseable broker URL>"
	}
	return u.Redacted()
}

func orDefault(d *metav1.Duration, def time.Duration) time.Duration {
	if d != nil && d.Duration > 0 {
		return d.Duration
	}
	return def
}

// EffectiveHandoff is spec.handoff or its default, Auto.
func (s *StatefulMigrationSpec) EffectiveHandoff() Handoff {
	if s.Handoff == "" {
		return HandoffAuto
	}
	return s.Handoff
}

// EffectiveMemoryTechnique is spec.memoryTechnique or its default, Auto.
func (s *StatefulMigrationSpec) EffectiveMemoryTechnique() MemoryTechnique {
	if s.MemoryTechnique == "" {
		return MemoryAuto
	}
	return s.MemoryTechnique
}
