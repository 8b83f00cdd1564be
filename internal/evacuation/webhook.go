package evacuation

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/podstream"
	"github.com/ms2m/ms2m/internal/policy"
)

// Path is where the manager serves the eviction webhook.
const Path = "/evict"

// +kubebuilder:rbac:groups="",resources=pods;nodes,verbs=get
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=list;create

// Webhook answers evictions of pods (a ValidatingWebhookConfiguration on
// pods/eviction CREATE sends them here).
type Webhook struct {
	// Reader reads pods, policies and namespaces from the API server: an
	// eviction is answered on what is, not on a cache a moment behind.
	Reader client.Reader
	// Client creates migrations and lists them (its cache is fine: a
	// migration this webhook created and the cache does not show yet is
	// created again, which AlreadyExists makes harmless).
	Client   client.Client
	Recorder recorder.EventRecorder
}

var _ admission.Handler = (*Webhook)(nil)

// Handle answers one eviction.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.SubResource != "eviction" || req.Kind.Kind != "Eviction" {
		return admission.Allowed("")
	}
	pod := &corev1.Pod{}
	err := w.Reader.Get(ctx, client.ObjectKey{Namespace: req.Namespace, Name: req.Name}, pod)
	if apierrors.IsNotFound(err) {
		var migrations v1alpha1.StatefulMigrationList
		if err := w.Client.List(ctx, &migrations, client.InNamespace(req.Namespace)); err != nil {
			return refuse(http.StatusTooManyRequests, fmt.Sprintf("ms2m could not list the migrations of %s: %v", req.Namespace, err))
		}
		if d, between := BetweenPods(req.Namespace, req.Name, migrations.Items); between {
			return refuse(d.Code, d.Message)
		}
		return admission.Allowed("")
	}
	if err != nil {
		return refuse(http.StatusTooManyRequests, fmt.Sprintf("ms2m could not read pod %s/%s to decide whether its eviction migrates it: %v", req.Namespace, req.Name, err))
	}
	// A pod whose policies cannot be read or parsed is not evicted on a
	// guess: the refusal is retried, and says what is wrong.
	pol, invalid, err := policy.Governing(ctx, w.Reader, pod)
	if err != nil {
		return refuse(http.StatusTooManyRequests, fmt.Sprintf("ms2m could not read the MigrationPolicies of pod %s/%s: %v", pod.Namespace, pod.Name, err))
	}
	if invalid != "" && pod.Labels[v1alpha1.LabelOnEviction] == "" {
		return refuse(http.StatusTooManyRequests, invalid)
	}
	strategy := StrategyOf(pod, pol)
	var migrations v1alpha1.StatefulMigrationList
	if err := w.Client.List(ctx, &migrations, client.InNamespace(pod.Namespace)); err != nil {
		return refuse(http.StatusTooManyRequests, fmt.Sprintf("ms2m could not list the migrations of %s: %v", pod.Namespace, err))
	}
	node := &corev1.Node{}
	if err := w.Reader.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		node = nil // not known: not taken for a node nothing drains
	}
	d := Decide(pod, node, strategy, migrations.Items, time.Now())
	if d.Event != "" && !dryRun(req) {
		w.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, "EvictedWithoutMigration", "Evict", "%s", d.Event)
	}
	if d.Allow {
		return admission.Allowed(d.Event)
	}
	if d.Migrate && disrupts(pod, pol) {
		// Budgets hold as for any eviction: the migration starts only
		// once one allows the pod's absence, and counts against it.
		take := w.takeDisruption
		if dryRun(req) {
			take = w.budgetRefusal
		}
		why, err := take(ctx, pod)
		if err != nil {
			return refuse(http.StatusTooManyRequests, fmt.Sprintf("ms2m could not check the disruption budget of pod %s/%s: %v", pod.Namespace, pod.Name, err))
		}
		if why != "" {
			return refuse(http.StatusTooManyRequests, why)
		}
	}
	if d.Migrate && !dryRun(req) {
		if err := w.startMigration(ctx, pod); err != nil {
			return refuse(http.StatusTooManyRequests, fmt.Sprintf("ms2m could not start migrating pod %s/%s: %v", pod.Namespace, pod.Name, err))
		}
	}
	return refuse(d.Code, d.Message)
}

// startMigration creates the pod's migration: ms2m picks the target node
// (a Ready, schedulable node with an agent), and the message stream is the
// one the pod's annotations describe.
func (w *Webhook) startMigration(ctx context.Context, pod *corev1.Pod) error {
	m := &v1alpha1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{Name: MigrationName(pod), Namespace: pod.Namespace,
			Labels: map[string]string{LabelEvictedFrom: pod.Spec.NodeName}},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: pod.Name, MessageQueueConfig: podstream.Flags{}.MessageQueueConfig(pod)},
	}
	if err := w.Client.Create(ctx, m); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// MigrationName names the migration an eviction starts: one per pod (its
// UID's start keeps a same-named successor apart), so that the retries of
// an eviction find it instead of starting another.
func MigrationName(pod *corev1.Pod) string {
	suffix := "-" + string(pod.UID)[:min(8, len(pod.UID))]
	name := "evict-" + pod.Name
	if len(name)+len(suffix) > 63 {
		name = name[:63-len(suffix)]
	}
	return name + suffix
}

func dryRun(req admission.Request) bool { return req.DryRun != nil && *req.DryRun }

func refuse(code int32, msg string) admission.Response {
	r := admission.Denied(msg)
	r.Result.Code = code
	switch code {
	case http.StatusTooManyRequests:
		r.Result.Reason = metav1.StatusReasonTooManyRequests
	case http.StatusNotFound:
		r.Result.Reason = metav1.StatusReasonNotFound
	}
	return r
}
