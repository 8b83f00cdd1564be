package controller_test

import (
	"context"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// A Sequential StatefulSet source held at its checkpoint is scaled away
// before it is deleted. Deleted first, it could be gone before the
// scale-down (which waits on its agent and the broker; a broker outage
// holds it) and its StatefulSet would recreate it as a fresh process,
// which would apply messages with none of the state: lost to the target
// (seen in the lab with RabbitMQ killed during Restoring). envtest runs no
// StatefulSet controller, so the test looks at the order itself: the
// StatefulSet's replicas when the source's deletion is asked for.
func TestHeldStatefulSetSourceIsScaledAwayBeforeItsDeletion(t *testing.T) {
	w := newWorld(t)
	sts := w.statefulSet("consumer", 1)
	src := w.sourcePodOf("consumer-0", sts)
	var mu sync.Mutex
	var replicasAtDelete []int32
	w.wrapClient = func(c client.Client) client.Client {
		return deleteSpy{Client: c, before: func(ctx context.Context, obj client.Object) {
			if _, ok := obj.(*corev1.Pod); !ok || obj.GetUID() != src.UID {
				return
			}
			got := &appsv1.StatefulSet{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(sts), got); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			replicasAtDelete = append(replicasAtDelete, ptr.Deref(got.Spec.Replicas, 1))
			mu.Unlock()
		}}
	}
	w.produce(50)
	time.Sleep(500 * time.Millisecond)
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MigrationStrategy, s.CheckpointEngine = v1alpha1.StrategySequential, v1alpha1.CheckpointEngineRunc
	})
	m := w.waitCompleted(name)
	if !m.Status.Plan.HoldSource {
		t.Fatalf("the plan does not hold the source (%+v): the test needs a held source", m.Status.Plan)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(replicasAtDelete) == 0 {
		t.Fatal("the source was never deleted by the controller")
	}
	for i, r := range replicasAtDelete {
		if r != 0 {
			t.Errorf("deletion %d of the held source asked for while its StatefulSet still counted it (%d replicas)", i+1, r)
		}
	}
	w.checkExactlyOnce("consumer-0")
}

// deleteSpy calls before with each object the client is asked to delete.
type deleteSpy struct {
	client.Client
	before func(context.Context, client.Object)
}

func (d deleteSpy) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	d.before(ctx, obj)
	return d.Client.Delete(ctx, obj, opts...)
}
