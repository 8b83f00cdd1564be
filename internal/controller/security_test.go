package controller_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/ckptcrypt"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// rogueListener is a broker a tenant runs: it counts who connects.
func rogueListener(t *testing.T) (addr string, dialled *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	dialled = &atomic.Int64{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			_ = c.Close()
		}
	}()
	return l.Addr().String(), dialled
}

func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// A migration naming a broker the cluster admin has not allowed is refused
// before the manager connects anywhere: the credentials it names never
// leave the cluster, and the refusal says whom to ask.
func TestBrokerOutsideTheAllowedHostsIsNeverDialled(t *testing.T) {
	w := newWorld(t)
	w.opts.AllowedBrokerHosts = []string{hostOf(t, w.amqpURL), hostOf(t, w.mgmtURL)}
	w.sourcePod("consumer-0")
	rogue, dialled := rogueListener(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "db-admin"},
		StringData: map[string]string{"username": "dbadmin", "password": "s3cret"}}
	if err := k8s.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) {
		s.MessageQueueConfig.BrokerURL = "amqp://" + rogue + "/"
		s.MessageQueueConfig.ManagementURL = "http://" + rogue
		s.MessageQueueConfig.CredentialsSecretRef = &v1alpha1.SecretReference{Name: "db-admin"}
	})
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseFailed, v1alpha1.PhaseCompleted)
	if m.Status.FailureReason != v1alpha1.ReasonNotAllowed || !strings.Contains(m.Status.FailureMessage, rogue) ||
		!strings.Contains(m.Status.FailureMessage, "--allowed-broker-hosts") {
		t.Fatalf("phase %s, %s: %s; want %s naming %s", m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage, v1alpha1.ReasonNotAllowed, rogue)
	}
	if n := dialled.Load(); n != 0 {
		t.Errorf("the manager connected %d time(s) to the broker it was not allowed", n)
	}
}

// Deleting a migration ends within the manager's deletion deadline even
// while the broker it must clean up is unreachable: the finalizer goes and
// an Event says what may be left, instead of an object nobody can delete.
func TestDeletionEndsWhileTheBrokerIsAway(t *testing.T) {
	w := newWorld(t)
	w.opts.DeletionDeadline = 5 * time.Second
	w.opts.BrokerRetryWindow = 5 * time.Minute
	w.sourcePod("consumer-0")
	w.produce(50)
	gate, gatedURL := newBrokerGate(t, w.amqpURL)
	w.sim.hold("transfer")
	w.startManager()
	name := w.b.Name("mig")
	m := w.migration(name, "consumer-0", func(s *v1alpha1.StatefulMigrationSpec) { s.MessageQueueConfig.BrokerURL = gatedURL })
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseTransferring)
	gate.cut()
	if err := k8s.Delete(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(m), &v1alpha1.StatefulMigration{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted migration is still there after 60 s with the broker away (deletion deadline 5 s): %v", w.get(name).Status.Conditions)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ev := w.events(name); !slices.Contains(ev, v1alpha1.ReasonCleanupAbandoned) {
		t.Errorf("no %s Event saying what was left; Events: %v", v1alpha1.ReasonCleanupAbandoned, ev)
	}
	w.sim.release("transfer")
	gate.set(false)
}

// A checkpoint is removed only when every node's agent says so: one whose
// agent is away keeps it, the condition says where, and it is asked again
// until it answers.
func TestCheckpointIsRemovedOnlyWhenEveryAgentConfirms(t *testing.T) {
	w := newWorld(t)
	w.sourcePod("consumer-0")
	w.produce(50)
	w.sim.hold("replay")
	w.startManager()
	name := w.b.Name("mig")
	w.migration(name, "consumer-0", nil)
	w.waitPhase(name, migrationTimeout, v1alpha1.PhaseReplaying)
	setAgent := func(node string, up bool) {
		w.sim.mu.Lock()
		w.sim.agents[node] = up
		w.sim.mu.Unlock()
	}
	setAgent("node-a", false)
	w.sim.release("replay")
	m := w.waitCompleted(name)
	sdktest.Eventually(t, 10*time.Second, "CheckpointRemoved=False naming node-a", func() bool {
		c := apimeta.FindStatusCondition(w.get(name).Status.Conditions, v1alpha1.ConditionCheckpointRemoved)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonAgentUnavailable && strings.Contains(c.Message, "node-a")
	})
	time.Sleep(2 * time.Second)
	if c := apimeta.FindStatusCondition(w.get(name).Status.Conditions, v1alpha1.ConditionCheckpointRemoved); c.Status != metav1.ConditionFalse {
		t.Fatalf("CheckpointRemoved %s while node-a's agent was away: %s", c.Status, c.Message)
	}
	setAgent("node-a", true)
	sdktest.Eventually(t, 10*time.Second, "CheckpointRemoved", func() bool {
		return migration.IsTrue(&w.get(name).Status, v1alpha1.ConditionCheckpointRemoved)
	})
	w.sim.mu.Lock()
	cleanA := w.sim.cleanups["node-a"]
	w.sim.mu.Unlock()
	if cleanA == 0 {
		t.Error("node-a's agent was never asked to remove the checkpoint")
	}
	w.checkExactlyOnce(m.Status.TargetPod)
}

// A checkpoint restored through ms2m's runtime handler is encrypted with a
// key of its own, which the manager gives the source's agent (to encrypt)
// and the target's (to decrypt) and writes nowhere: not in the
// migration's status, not in an Event.
func TestCheckpointKeyGoesToTheTwoAgentsOnly(t *testing.T) {
	w := newWorld(t)
	m := w.waitCompleted(w.migrateProducing(nil))
	if !m.Status.Plan.EncryptCheckpoint || !strings.Contains(m.Status.Plan.EncryptionReason, "a key for this checkpoint alone") {
		t.Fatalf("plan: encrypt %v (%s)", m.Status.Plan.EncryptCheckpoint, m.Status.Plan.EncryptionReason)
	}
	id := m.Status.Checkpoint.ID
	want, err := ckptcrypt.Key(w.opts.CheckpointSecret, id)
	if err != nil {
		t.Fatal(err)
	}
	w.sim.mu.Lock()
	keys := w.sim.keys[id]
	w.sim.mu.Unlock()
	if len(keys) != 2 || !bytes.Equal(keys[0], want) || !bytes.Equal(keys[1], want) {
		t.Fatalf("the transfer and the staging were given keys %x, want %x for both", keys, want)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var events corev1.EventList
	if err := k8s.List(context.Background(), &events, client.InNamespace(w.ns)); err != nil {
		t.Fatal(err)
	}
	evraw, _ := json.Marshal(events)
	for _, form := range []string{base64.StdEncoding.EncodeToString(want), hex.EncodeToString(want), string(want)} {
		if bytes.Contains(raw, []byte(form)) || bytes.Contains(evraw, []byte(form)) {
			t.Fatalf("the checkpoint's key is written in the migration or its Events")
		}
	}
}
