package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/migration"
)

var (
	migrationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ms2m_migrations_total",
		Help: "Migrations that reached a final phase, by result, strategy and failure reason.",
	}, []string{"result", "strategy", "reason"})
	phaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ms2m_phase_duration_seconds",
		Help:    "Time spent in each migration phase.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	}, []string{"phase", "strategy"})
	migrationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ms2m_migration_duration_seconds",
		Help:    "Total time of completed migrations, by technique.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 12),
	}, techniqueLabels)
	freezeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ms2m_freeze_seconds",
		Help:    "How long the checkpoint froze the source, by technique.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	}, techniqueLabels)
	unavailableSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ms2m_unavailable_seconds",
		Help:    "How long the workload had no ready endpoint in its Services during the cutover, by technique (0 for a ShadowPod migration).",
		Buckets: append([]float64{0}, prometheus.ExponentialBuckets(0.01, 2, 14)...),
	}, techniqueLabels)
	transferredBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ms2m_transferred_bytes_total",
		Help: "Bytes of checkpoints (and pages moved apart from them) that completed migrations moved between nodes, by technique.",
	}, techniqueLabels)
	handoffGapSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ms2m_handoff_gap_seconds",
		Help:    "From the source stopping to the target consuming the primary queue.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	}, []string{"strategy"})
	checkpointBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ms2m_checkpoint_bytes",
		Help:    "Size of checkpoint archives.",
		Buckets: prometheus.ExponentialBuckets(1<<20, 2, 12),
	})
	reconcileRetries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ms2m_reconcile_retries_total",
		Help: "Reconciles that failed on a transient error (broker, API server, agent) and were retried after the retry interval.",
	})
	replayedMessages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ms2m_replayed_messages_total",
		Help: "Messages the targets of completed migrations replayed.",
	})
)

// exported is every collector the manager registers, and whether it is a
// histogram (its series carry _bucket, _sum and _count): registration and
// MetricFamilies read the one list.
var exported = []struct {
	c         prometheus.Collector
	histogram bool
}{
	{migrationsTotal, false}, {phaseSeconds, true}, {migrationSeconds, true}, {freezeSeconds, true},
	{unavailableSeconds, true}, {transferredBytes, false}, {handoffGapSeconds, true}, {checkpointBytes, true},
	{replayedMessages, false}, {reconcileRetries, false}, {running, false},
}

func init() {
	for _, e := range exported {
		metrics.Registry.MustRegister(e.c)
	}
}

// techniqueLabels are the plan's choices a completed migration's
// measures are broken down by.
var techniqueLabels = []string{"strategy", "transfer", "memory", "handoff"}

func techniques(p *v1alpha1.MigrationPlan) []string {
	return []string{string(p.Strategy), string(p.TransferMode), string(p.MemoryTechnique), string(p.Handoff)}
}

func observePhaseTransition(m *v1alpha1.StatefulMigration, from v1alpha1.Phase) {
	strategy := string(m.Status.Plan.Strategy)
	if from != "" && !from.IsFinal() {
		if d := migration.PhaseDuration(&m.Status, from); d > 0 {
			phaseSeconds.WithLabelValues(string(from), strategy).Observe(d.Seconds())
		}
	}
}

func observeCompletion(m *v1alpha1.StatefulMigration) {
	st := &m.Status
	strategy := string(st.Plan.Strategy)
	if st.Phase == v1alpha1.PhaseFailed {
		migrationsTotal.WithLabelValues("failed", strategy, st.FailureReason).Inc()
		return
	}
	migrationsTotal.WithLabelValues("completed", strategy, "").Inc()
	by := techniques(&st.Plan)
	if st.TotalDuration != nil {
		migrationSeconds.WithLabelValues(by...).Observe(st.TotalDuration.Seconds())
	}
	if st.Checkpoint != nil && st.Checkpoint.FreezeDuration != nil {
		freezeSeconds.WithLabelValues(by...).Observe(st.Checkpoint.FreezeDuration.Seconds())
	}
	if st.Downtime != nil && st.Downtime.Unavailable != nil {
		unavailableSeconds.WithLabelValues(by...).Observe(st.Downtime.Unavailable.Seconds())
	}
	if t := st.Transfer; t != nil {
		transferredBytes.WithLabelValues(by...).Add(float64(t.BytesTransferred + t.PageBytes))
	}
	if st.Downtime != nil && st.Downtime.HandoffGap != nil {
		handoffGapSeconds.WithLabelValues(strategy).Observe(st.Downtime.HandoffGap.Seconds())
	}
	if st.Checkpoint != nil {
		checkpointBytes.Observe(float64(st.Checkpoint.SizeBytes))
	}
	if st.Messages != nil {
		replayedMessages.Add(float64(st.Messages.Replayed))
	}
}
