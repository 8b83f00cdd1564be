package controller

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// runningMigrations reports, at each scrape, the migrations the manager's
// cache holds: how many are in each phase, and for each one that runs how
// far its data and its stream have come (the way KubeVirt reports its
// migrations' data, from its informers).
type runningMigrations struct {
	reader atomic.Pointer[client.Reader]
}

var running = &runningMigrations{}

var (
	descInPhase       = prometheus.NewDesc("ms2m_migrations", "Migrations the manager knows, by phase.", []string{"phase"}, nil)
	perMigration      = []string{"namespace", "migration", "phase", "strategy", "memory"}
	descDataTotal     = prometheus.NewDesc("ms2m_migration_data_total_bytes", "Bytes a running migration's transfer moves.", perMigration, nil)
	descDataProcessed = prometheus.NewDesc("ms2m_migration_data_processed_bytes", "Bytes a running migration's transfer has moved.", perMigration, nil)
	descDataRemaining = prometheus.NewDesc("ms2m_migration_data_remaining_bytes", "Bytes a running migration's transfer has yet to move.", perMigration, nil)
	descDataRate      = prometheus.NewDesc("ms2m_migration_transfer_rate_bytes", "A running migration's measured transfer rate, in bytes per second.", perMigration, nil)
	descMsgRemaining  = prometheus.NewDesc("ms2m_migration_messages_remaining", "Messages a running migration's target has yet to replay.", perMigration, nil)
	descElapsed       = prometheus.NewDesc("ms2m_migration_elapsed_seconds", "How long a running migration has run.", perMigration, nil)
)

func (r *runningMigrations) use(c client.Reader) { r.reader.Store(&c) }

func (r *runningMigrations) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInPhase, descDataTotal, descDataProcessed, descDataRemaining, descDataRate, descMsgRemaining, descElapsed} {
		ch <- d
	}
}

func (r *runningMigrations) Collect(ch chan<- prometheus.Metric) {
	c := r.reader.Load()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.StatefulMigrationList
	if err := (*c).List(ctx, &list); err != nil {
		return
	}
	perPhase := map[v1alpha1.Phase]int{}
	for _, p := range v1alpha1.Phases {
		perPhase[p] = 0
	}
	perPhase[v1alpha1.PhaseCompleted], perPhase[v1alpha1.PhaseFailed] = 0, 0
	now := time.Now()
	for i := range list.Items {
		m := &list.Items[i]
		st := &m.Status
		phase := st.Phase
		if phase == "" {
			phase = v1alpha1.PhasePending
		}
		perPhase[phase]++
		if phase.IsFinal() {
			continue
		}
		labels := []string{m.Namespace, m.Name, string(phase), string(st.Plan.Strategy), string(st.Plan.MemoryTechnique)}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		if t := st.Transfer; t != nil {
			gauge(descDataTotal, float64(t.BytesTotal))
			gauge(descDataProcessed, float64(t.BytesTransferred))
			gauge(descDataRemaining, float64(t.BytesRemaining))
			gauge(descDataRate, float64(t.RateBytesPerSecond))
		} else {
			gauge(descDataTotal, 0)
			gauge(descDataProcessed, 0)
			gauge(descDataRemaining, 0)
			gauge(descDataRate, 0)
		}
		remaining := int64(0)
		if st.Messages != nil {
			remaining = st.Messages.Remaining
		}
		gauge(descMsgRemaining, float64(remaining))
		if st.StartTime != nil {
			gauge(descElapsed, now.Sub(st.StartTime.Time).Seconds())
		}
	}
	for phase, n := range perPhase {
		ch <- prometheus.MustNewConstMetric(descInPhase, prometheus.GaugeValue, float64(n), string(phase))
	}
}
