// Package controller reconciles StatefulMigrations: an explicit phase
// machine, one small handler per phase, all progress kept in status, on the
// broker or in the cluster, so a restarted manager resumes where it stopped.
package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/render"
)

// Finalizer holds a migration until what it set up is undone.
const Finalizer = "migration.ms2m.io/cleanup"

// Options tune the controller.
type Options struct {
	// DefaultCheckpointRepository is used when a Registry migration names
	// none.
	DefaultCheckpointRepository string
	// BrokerRetryWindow is how long Pending retries an unreachable broker
	// before failing the migration.
	BrokerRetryWindow time.Duration
	// CaughtUpBelow: the target has caught up once the replay queue holds
	// at most this many messages.
	CaughtUpBelow int64
	// Poll is how often waiting handlers look again when no event will
	// wake them (node operations, broker queues).
	Poll time.Duration
	// HandoffPoll is how often the cutover looks again while the stream
	// changes hands (the source's consumer leaving, the buffer draining,
	// the target taking END_REPLAY): each of those waits is time without
	// a consumer, so it is looked at more often than Poll.
	HandoffPoll time.Duration
	// RetryAfter is when a reconcile that failed on a transient error
	// (the broker, the API server, an agent) tries again.
	RetryAfter time.Duration
	// MaxConcurrentReconciles bounds parallel migrations.
	MaxConcurrentReconciles int
	// SourceStopGrace is the termination grace the source gets once the
	// migration no longer needs it (whole seconds; default 1 s).
	SourceStopGrace time.Duration
	// AssumedPrefetch bounds the messages a source holds unapplied when
	// the broker cannot describe its consumers (no RabbitMQ management
	// API); conditions say it is assumed.
	AssumedPrefetch int64
	// RuntimeClass is the RuntimeClass of ms2m's runtime handler (default
	// "ms2m"); a cluster without it restores only where the runtime does.
	RuntimeClass string
	// AllowedRegistries are the registries, besides the default
	// repository's, that checkpoints may be pushed to.
	AllowedRegistries []string
	// AllowedBrokerHosts are the brokers the manager may connect to for a
	// migration (empty: any).
	AllowedBrokerHosts []string
	// ExplicitTargetOverridesScheduling lets spec.targetNode name a node
	// that is cordoned, tainted against the pod or outside its
	// nodeSelector.
	ExplicitTargetOverridesScheduling bool
	// DeletionDeadline bounds the cleanup of a deleted migration (default
	// 2 min): after it the finalizer goes, and an Event says what was left.
	DeletionDeadline time.Duration
	// NodeLostGrace is how long a node must have been not Ready before a
	// rollback force-deletes the target pod it holds (default 40 s): its
	// kubelet would never confirm the deletion.
	NodeLostGrace time.Duration
	// FailForwardAfter is how long past its deadline a migration past the
	// point of no return keeps going before it fails forward (default
	// 2 min).
	FailForwardAfter time.Duration
	// CheckpointSecret is what each checkpoint's encryption key is derived
	// from (internal/ckptcrypt); without it checkpoints travel as the
	// source wrote them, and plans say so.
	CheckpointSecret []byte
}

// destinations is the cluster admin's limit on where migrations send
// checkpoints and credentials.
func (o Options) destinations() migration.Destinations {
	return migration.Destinations{Registries: o.AllowedRegistries, DefaultRepository: o.DefaultCheckpointRepository, BrokerHosts: o.AllowedBrokerHosts}
}

func (o Options) withDefaults() Options {
	if o.BrokerRetryWindow == 0 {
		o.BrokerRetryWindow = 30 * time.Second
	}
	if o.CaughtUpBelow == 0 {
		o.CaughtUpBelow = 5
	}
	if o.Poll == 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = time.Second
	}
	if o.HandoffPoll == 0 {
		o.HandoffPoll = 50 * time.Millisecond
	}
	if o.MaxConcurrentReconciles == 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.SourceStopGrace == 0 {
		o.SourceStopGrace = time.Second
	}
	if o.RuntimeClass == "" {
		o.RuntimeClass = "ms2m"
	}
	if o.DeletionDeadline == 0 {
		o.DeletionDeadline = 2 * time.Minute
	}
	if o.FailForwardAfter == 0 {
		o.FailForwardAfter = 2 * time.Minute
	}
	if o.NodeLostGrace == 0 {
		o.NodeLostGrace = 40 * time.Second
	}
	if o.AssumedPrefetch == 0 {
		o.AssumedPrefetch = 50
	}
	return o
}

// Reconciler drives StatefulMigrations.
type Reconciler struct {
	client.Client
	// APIReader reads straight from the API server: migrations, because a
	// cached copy one status write behind would repeat a side effect (a
	// second END_REPLAY) the status already records as done; and what a
	// migration reads once or twice (owners, Secrets, ConfigMaps), which
	// is not worth caching cluster-wide.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	// Agents reaches the node agents (checkpoint, transfer, cleanup).
	Agents agentapi.Client
	// DialBroker opens one broker session per migration and reconcile.
	DialBroker broker.Dialer
	Clock      clock.PassiveClock
	Options    Options

	// slots counts running migrations for MigrationPolicy limits.
	slots slots
	// brokers keeps, between reconciles, the broker sessions of running
	// migrations: a migration's Handoff holding its queue needs its
	// connection (the lock is a consumer on it), and the others save a
	// dial (TCP, the AMQP handshake and a Secret read) on each of the
	// cutover's reconciles, which come every HandoffPoll.
	brokers sessions
}

// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch;create;update;patch
// swap-identity is no API verb: config/admission's policy admits the
// identity-swap annotations, and a migration's creation without pods/exec
// on its pod, only from who holds it (the manager, and cluster admins).
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=swap-identity
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=list
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=list
// +kubebuilder:rbac:groups=node.k8s.io,resources=runtimeclasses,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets;deployments,verbs=get
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;patch
// Owner references with blockOwnerDeletion on handed-over pods need these
// where the OwnerReferencesPermissionEnforcement admission plugin runs.
// +kubebuilder:rbac:groups=apps,resources=statefulsets/finalizers;replicasets/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the controller: migrations, their identity
// swaps, and the pods they create (labelled with their migration) wake it.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	r.Options = r.Options.withDefaults()
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	// The scrape reads the migrations this manager caches.
	running.use(mgr.GetClient())
	podToMigration := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[render.LabelMigration]
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
	})
	err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		r.brokers.closeAll()
		return nil
	}))
	if err != nil {
		return err
	}
	return builder.ControllerManagedBy(mgr).
		For(&v1alpha1.StatefulMigration{}).
		// An identity swap is a child migration: its progress wakes its parent.
		Owns(&v1alpha1.StatefulMigration{}).
		Watches(&corev1.Pod{}, podToMigration).
		// A migration that ends frees a slot for those waiting for one.
		Watches(&v1alpha1.StatefulMigration{}, handler.EnqueueRequestsFromMapFunc(r.wakeQueued)).
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		Named("statefulmigration").
		Complete(r)
}

// Reconcile fetches the migration, holds it with a finalizer, runs the
// handler of its phase and writes status once, at the end.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (res reconcile.Result, err error) {
	m := &v1alpha1.StatefulMigration{}
	if err := r.APIReader.Get(ctx, req.NamespacedName, m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if m.DeletionTimestamp.IsZero() && controllerutil.AddFinalizer(m, Finalizer) {
		if err := r.Update(ctx, m); err != nil {
			return reconcile.Result{}, err
		}
	}
	s := r.newScope(ctx, m)
	defer s.close()
	before := m.DeepCopy()
	defer func() {
		if perr := r.patchStatus(ctx, before, m); perr != nil && err == nil {
			err = perr
		}
	}()
	if !m.DeletionTimestamp.IsZero() {
		res, err = r.reconcileDelete(ctx, s)
	} else {
		res, err = r.reconcileNormal(ctx, s)
	}
	return r.retrySoon(ctx, res, err)
}

// retrySoon turns a handler's error into a retry after Options.RetryAfter.
// The errors left by then are transient (the broker, the API server, an
// agent, each with its own deadline in the migration), and returned as
// errors they would be retried on controller-runtime's growing backoff: a
// migration sat idle a minute after RabbitMQ came back. A conflict is
// retried at once, as controller-runtime does.
func (r *Reconciler) retrySoon(ctx context.Context, res reconcile.Result, err error) (reconcile.Result, error) {
	if err == nil || apierrors.IsConflict(err) {
		return res, err
	}
	log.FromContext(ctx).Info("will retry", "after", r.Options.RetryAfter, "error", err.Error())
	reconcileRetries.Inc()
	return reconcile.Result{RequeueAfter: r.Options.RetryAfter}, nil
}

func (r *Reconciler) patchStatus(ctx context.Context, before, m *v1alpha1.StatefulMigration) error {
	if equality.Semantic.DeepEqual(before.Status, m.Status) {
		return nil
	}
	m.Status.ObservedGeneration = m.Generation
	// The lock turns a write based on an outdated read into a conflict (and
	// a retry) instead of a lost update.
	err := r.Status().Patch(ctx, m, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// phaseHandler observes, decides and acts for one phase. It returns when to
// look again; it moves the phase on with s.enter and fails with s.fail.
type phaseHandler func(ctx context.Context, s *scope) (reconcile.Result, error)

func (r *Reconciler) handlers() map[v1alpha1.Phase]phaseHandler {
	return map[v1alpha1.Phase]phaseHandler{
		v1alpha1.PhasePending:       r.reconcilePending,
		v1alpha1.PhaseCheckpointing: r.reconcileCheckpointing,
		v1alpha1.PhaseTransferring:  r.reconcileTransferring,
		v1alpha1.PhaseRestoring:     r.reconcileRestoring,
		v1alpha1.PhaseReplaying:     r.reconcileReplaying,
		v1alpha1.PhaseFinalizing:    r.reconcileFinalizing,
	}
}

func (r *Reconciler) reconcileNormal(ctx context.Context, s *scope) (reconcile.Result, error) {
	st := &s.m.Status
	if st.Phase == v1alpha1.PhaseCompleted {
		return r.afterCompletion(ctx, s)
	}
	if st.Phase.IsFinal() {
		return reconcile.Result{}, nil
	}
	if st.Phase == "" {
		s.enter(v1alpha1.PhasePending)
	}
	if st.FailureReason != "" {
		return r.rollback(ctx, s)
	}
	if s.m.Spec.Abort {
		if res, done := r.handleAbort(s); done {
			return res, nil
		}
	}
	if res, failed := r.checkDeadlines(s); failed {
		return res, nil
	}
	if failed, err := r.holdLock(ctx, s); failed || err != nil {
		return next(), err
	}
	handle := r.handlers()[st.Phase]
	res, err := handle(ctx, s)
	if err != nil {
		return res, fmt.Errorf("phase %s: %w", st.Phase, err)
	}
	return s.clampRequeue(res), nil
}

// holdLock makes sure that, while the Handoff keeps a thawed source off its
// queue, the queue is still held: a lock the session lost (a manager
// restart, a dropped connection) is taken again when nothing consumes the
// queue; otherwise the migration fails (and rolls back: the source has
// taken messages the checkpoint lacks).
func (r *Reconciler) holdLock(ctx context.Context, s *scope) (bool, error) {
	if !s.hasBroker() || s.m.Status.Broker == nil || !s.m.Status.Broker.PrimaryLocked {
		return false, nil
	}
	h, err := s.brokerSession(ctx)
	if err == nil {
		err = h.HoldLock(ctx, s.brokerRecord())
	}
	if err == nil || broker.IsRetryable(err) {
		return false, err
	}
	s.fail(broker.ReasonOf(err), "%v", err)
	return true, nil
}

// afterCompletion removes what a completed migration no longer needs: the
// checkpoint (the workload's memory) and a released source (release.go),
// off the cutover's path. Retried
// until done; a deletion does it first (reconcileDelete). Until the
// target's kubelet has confirmed the Ready the cutover set, it also holds
// it (see cutover.go): the target's pod events wake it.
func (r *Reconciler) afterCompletion(ctx context.Context, s *scope) (reconcile.Result, error) {
	if err := r.guardReady(ctx, s); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.noteRestoredExit(ctx, s); err != nil {
		return reconcile.Result{}, err
	}
	res, err := r.retireReleasedSource(ctx, s, !s.m.DeletionTimestamp.IsZero())
	if err != nil || checkpointSettled(s.m) {
		return res, err
	}
	return res, r.cleanupCheckpoint(ctx, s)
}
