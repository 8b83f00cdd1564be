package controller_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker/rabbitmq"
	"github.com/ms2m/ms2m/internal/ckptcrypt"
	"github.com/ms2m/ms2m/internal/controller"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

var (
	restCfg *rest.Config
	// adminCfg is the test's own (a cluster admin), for what a user does.
	adminCfg *rest.Config
	scheme   = testenv.Scheme()
	k8s      client.Client
)

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithAPIServer(m, func(_ *envtest.Environment, cfg *rest.Config) (err error) {
		adminCfg = cfg
		if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			return err
		}
		if err = createNodes(); err != nil {
			return err
		}
		// The chart installs the RuntimeClass of ms2m's runtime handler.
		rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "ms2m"}, Handler: "ms2m"}
		if err = k8s.Create(context.Background(), rc); err != nil {
			return err
		}
		restCfg, err = asManager(cfg)
		return err
	}))
}

// asManager returns cfg acting as the manager's ServiceAccount, bound to
// the ClusterRole that `make generate` writes for deployment: the tests run
// the controller with exactly the permissions it ships with.
func asManager(cfg *rest.Config) (*rest.Config, error) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(raw, role); err != nil {
		return nil, fmt.Errorf("config/rbac/role.yaml: %w", err)
	}
	const ns, sa = "ms2m-system", "ms2m-manager"
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}}}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(context.Background(), o); err != nil {
			return nil, err
		}
	}
	m := rest.CopyConfig(cfg)
	m.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa}
	return m, nil
}

// createNodes registers node-a and node-b (Ready), node-c (NotReady),
// node-d (Ready, cordoned) and node-e (Ready; the one test that loses a
// node loses it).
func createNodes() error {
	for name, ready := range map[string]bool{"node-a": true, "node-b": true, "node-c": false, "node-d": true, "node-e": true} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Unschedulable: name == "node-d"}}
		if err := k8s.Create(context.Background(), n); err != nil {
			return err
		}
		st := corev1.ConditionTrue
		if !ready {
			st = corev1.ConditionFalse
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		if err := k8s.Status().Update(context.Background(), n); err != nil {
			return err
		}
		if ready {
			// The API server taints a new node not-ready; in a cluster the
			// node lifecycle controller lifts that once the node is Ready.
			n.Spec.Taints = nil
			if err := k8s.Update(context.Background(), n); err != nil {
				return err
			}
		}
	}
	return nil
}

// world is one test's namespace, broker topology, node side and producer.
type world struct {
	t        *testing.T
	ns       string
	b        *sdktest.Broker
	amqpURL  string
	mgmtURL  string
	exchange string
	queue    string
	sim      *nodeSim
	opts     controller.Options
	// onManager adds to a manager before it starts (a webhook server).
	onManager func(ctrl.Manager) error
	// wrapClient, when set, wraps the reconciler's client (to see what it
	// asks of the API server, and when).
	wrapClient func(client.Client) client.Client

	pubMu     sync.Mutex
	published []pubRecord
	stopPub   func() int64
}

type pubRecord struct {
	seq  int64
	body []byte
}

var worldSeq atomic.Int64

func newWorld(t *testing.T) *world {
	t.Helper()
	amqpURL, mgmtURL := testenv.AMQPURL(t), testenv.RabbitMQManagementURL(t)
	w := &world{t: t, ns: fmt.Sprintf("test-%d", worldSeq.Add(1)), amqpURL: amqpURL, mgmtURL: mgmtURL}
	t.Logf("namespace %s", w.ns)
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last, once the manager and the
	// simulated nodes have stopped.
	t.Cleanup(w.clearNamespace)
	w.b = sdktest.Dial(t, amqpURL, mgmtURL)
	w.exchange, w.queue = w.b.Name("orders"), w.b.Name("orders.q")
	w.b.Exchange(t, w.exchange)
	w.b.Queue(t, w.queue)
	w.b.Bind(t, w.queue, w.exchange, "orders")
	w.sim = newNodeSim(t, k8s, w.ns, amqpURL, w.queue)
	secret, err := ckptcrypt.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	w.opts = controller.Options{DefaultCheckpointRepository: "registry.test/ckpt", BrokerRetryWindow: 2 * time.Second, CheckpointSecret: secret,
		CaughtUpBelow: 2, Poll: 50 * time.Millisecond}
	return w
}

// clearNamespace removes what a test left in its namespace. envtest runs
// no namespace controller, so a deleted namespace would keep it all, and
// thousands of property cases would leave the API server (and every
// later case) carrying tens of thousands of objects.
func (w *world) clearNamespace() {
	ctx := context.Background()
	var ms v1alpha1.StatefulMigrationList
	if err := k8s.List(ctx, &ms, client.InNamespace(w.ns)); err == nil {
		for i := range ms.Items {
			m := &ms.Items[i]
			if len(m.Finalizers) > 0 {
				patch := client.MergeFrom(m.DeepCopy())
				m.Finalizers = nil
				_ = k8s.Patch(ctx, m, patch)
			}
		}
	}
	for _, obj := range []client.Object{&v1alpha1.StatefulMigration{}, &corev1.Pod{}, &corev1.ConfigMap{}, &corev1.Service{},
		&corev1.Event{}, &discoveryv1.EndpointSlice{}, &appsv1.StatefulSet{}} {
		_ = k8s.DeleteAllOf(ctx, obj, client.InNamespace(w.ns), client.GracePeriodSeconds(0))
	}
}

// startManager runs a controller manager for the world's namespace and
// returns its stop function (stopping it is a controller crash: nothing
// runs after).
func (w *world) startManager() (stop func()) {
	w.t.Helper()
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{w.ns: {}}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	if w.onManager != nil {
		if err := w.onManager(mgr); err != nil {
			w.t.Fatal(err)
		}
	}
	c := mgr.GetClient()
	if w.wrapClient != nil {
		c = w.wrapClient(c)
	}
	r := &controller.Reconciler{Client: c, Scheme: scheme, Recorder: mgr.GetEventRecorder("ms2m"),
		Agents: w.sim, DialBroker: rabbitmq.Dial, Options: w.opts}
	if err := r.SetupWithManager(mgr); err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("manager: %v", err)
		}
	}
	w.t.Cleanup(stop)
	return stop
}

// sourcePod creates a running consumer pod on node-a.
func (w *world) sourcePod(name string) *corev1.Pod {
	w.t.Helper()
	return w.sourcePodOn(name, "node-a")
}

func (w *world) sourcePodOn(name, node string) *corev1.Pod {
	w.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns, Labels: map[string]string{"app": "consumer"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "consumer", Image: imageConsumer}}}}
	if err := k8s.Create(context.Background(), p); err != nil {
		w.t.Fatal(err)
	}
	sdktest.Eventually(w.t, 10*time.Second, "source pod running", func() bool {
		return w.sim.pod(name) != nil && w.b.Inspect(w.t, w.queue).Consumers == 1
	})
	return p
}

// produce publishes "order-<seq>" at rate msg/s until the returned stop is
// called; every confirmed message is recorded for the reference.
func (w *world) produce(rate int) {
	w.t.Helper()
	pub, err := sdk.NewPublisher(sdk.PublisherConfig{URL: w.amqpURL, Exchange: w.exchange, RoutingKey: "orders",
		Confirmed: func(seq int64, body []byte) {
			w.pubMu.Lock()
			w.published = append(w.published, pubRecord{seq, append([]byte(nil), body...)})
			w.pubMu.Unlock()
		}})
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int64)
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		var last int64
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
				if seq, err := pub.Publish(ctx, fmt.Appendf(nil, "order-%d", last+1)); err == nil {
					last = seq
				}
			}
		}
		_ = pub.Flush(context.Background())
		_ = pub.Close()
		done <- last
	}()
	var once sync.Once
	var last int64
	w.stopPub = func() int64 {
		once.Do(func() { cancel(); last = <-done })
		return last
	}
	w.t.Cleanup(func() { w.stopPub() })
}

// reference is the digest over everything the broker confirmed, computed
// here from its definition, not with the SDK's code.
func (w *world) reference() (last int64, digest string) {
	w.pubMu.Lock()
	defer w.pubMu.Unlock()
	last, d := referenceChain(w.published)
	return last, hex.EncodeToString(d)
}

// referenceChain is one producer's digest over recs, in sequence order,
// from the definition in sdk/digest.go, and its last sequence number.
func referenceChain(recs []pubRecord) (last int64, digest []byte) {
	recs = append([]pubRecord(nil), recs...)
	sort.Slice(recs, func(i, j int) bool { return recs[i].seq < recs[j].seq })
	d := make([]byte, 32)
	for _, r := range recs {
		var hdr [12]byte
		binary.BigEndian.PutUint64(hdr[:8], uint64(r.seq))
		binary.BigEndian.PutUint32(hdr[8:], uint32(len(r.body)))
		h := sha256.New()
		h.Write(d)
		h.Write(hdr[:])
		h.Write(r.body)
		d = h.Sum(nil)
		last = r.seq
	}
	return last, d
}

func (w *world) migration(name, pod string, mutate func(*v1alpha1.StatefulMigrationSpec)) *v1alpha1.StatefulMigration {
	w.t.Helper()
	m := &v1alpha1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: v1alpha1.StatefulMigrationSpec{SourcePod: pod, TargetNode: "node-b", ReplayCutoffSeconds: 30,
			MessageQueueConfig: &v1alpha1.MessageQueueConfig{QueueName: w.queue, BrokerURL: w.amqpURL,
				ExchangeName: w.exchange, RoutingKey: "orders", ManagementURL: w.mgmtURL}}}
	if mutate != nil {
		mutate(&m.Spec)
	}
	if err := k8s.Create(context.Background(), m); err != nil {
		w.t.Fatal(err)
	}
	return m
}

func (w *world) get(name string) *v1alpha1.StatefulMigration {
	w.t.Helper()
	m := &v1alpha1.StatefulMigration{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: name}, m); err != nil {
		w.t.Fatal(err)
	}
	return m
}

// waitCompleted waits for the migration to end and fails the test unless
// it completed.
func (w *world) waitCompleted(name string) *v1alpha1.StatefulMigration {
	w.t.Helper()
	m := w.waitPhase(name, migrationTimeout, v1alpha1.PhaseCompleted, v1alpha1.PhaseFailed)
	if m.Status.Phase != v1alpha1.PhaseCompleted {
		w.t.Fatalf("migration failed: %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
	}
	return m
}

// waitSourceRetired waits for a completed migration's source pod to be
// gone and its target handed to the source's owner: a source that let go
// of its queue (RELEASE) goes after completion, once the target's kubelet
// has confirmed it Ready.
func (w *world) waitSourceRetired(name string, src *corev1.Pod) {
	w.t.Helper()
	sdktest.Eventually(w.t, 20*time.Second, "source "+src.Name+" gone and OwnershipTransferred", func() bool {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(src), &corev1.Pod{})
		return apierrors.IsNotFound(err) && migration.IsTrue(&w.get(name).Status, v1alpha1.ConditionOwnershipTransferred)
	})
}

func (w *world) waitPhase(name string, timeout time.Duration, phases ...v1alpha1.Phase) *v1alpha1.StatefulMigration {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := w.get(name)
		for _, p := range phases {
			if m.Status.Phase == p {
				return m
			}
		}
		if time.Now().After(deadline) {
			var conds []string
			for _, c := range m.Status.Conditions {
				conds = append(conds, fmt.Sprintf("%s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message))
			}
			w.t.Fatalf("%s still in phase %s after %s, want %v; messages %+v\n%s", name, m.Status.Phase, timeout, phases, m.Status.Messages, strings.Join(conds, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// topology lists the queues and bindings of this test (their names carry
// the test's suffix) as the broker reports them (management API).
func (w *world) topology() []string {
	w.t.Helper()
	suffix := strings.TrimPrefix(w.b.Name(""), "-")
	var out []string
	var bindings []struct {
		Source, Destination string
		RoutingKey          string `json:"routing_key"`
	}
	var queues []struct{ Name string }
	w.mgmt("/api/bindings/%2F", &bindings)
	w.mgmt("/api/queues/%2F", &queues)
	for _, b := range bindings {
		if strings.Contains(b.Source+" "+b.Destination, suffix) {
			out = append(out, "binding "+b.Source+" -> "+b.Destination+" ["+b.RoutingKey+"]")
		}
	}
	for _, q := range queues {
		if strings.Contains(q.Name, suffix) {
			out = append(out, "queue "+q.Name)
		}
	}
	sort.Strings(out)
	return out
}

// replayQueues lists every replay queue on the broker.
func (w *world) replayQueues() []string {
	var queues []struct{ Name string }
	w.mgmt("/api/queues/%2F", &queues)
	var out []string
	for _, q := range queues {
		if strings.HasPrefix(q.Name, "ms2m.replay.") {
			out = append(out, q.Name)
		}
	}
	return out
}

func (w *world) mgmt(path string, out any) {
	w.t.Helper()
	req, err := http.NewRequest(http.MethodGet, w.mgmtURL+path, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	if u, err := url.Parse(w.amqpURL); err == nil && u.User != nil {
		pass, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		w.t.Fatal(err)
	}
}

// events lists the reasons of the Events about a migration.
func (w *world) events(name string) []string {
	w.t.Helper()
	list := &corev1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(w.ns)); err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// brokerGate is a TCP forwarder in front of the real broker that can refuse
// connections, as a broker that is down does: the controller sees a real
// connection failure.
type brokerGate struct {
	addr  string
	mu    sync.Mutex
	shut  bool
	conns map[net.Conn]bool
}

func newBrokerGate(t *testing.T, amqpURL string) (*brokerGate, string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	g := &brokerGate{addr: u.Host, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go g.serve(c)
		}
	}()
	gated := *u
	gated.Host = l.Addr().String()
	return g, gated.String()
}

func (g *brokerGate) serve(c net.Conn) {
	defer c.Close()
	g.mu.Lock()
	shut := g.shut
	if !shut {
		g.conns[c] = true
	}
	g.mu.Unlock()
	if shut {
		return
	}
	defer func() {
		g.mu.Lock()
		delete(g.conns, c)
		g.mu.Unlock()
	}()
	up, err := net.Dial("tcp", g.addr)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
}

func (g *brokerGate) set(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut = shut
}

// cut shuts the gate and drops every connection through it, as a broker
// that goes down does.
func (g *brokerGate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut = true
	for c := range g.conns {
		_ = c.Close()
	}
}
