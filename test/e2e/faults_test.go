//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
	"github.com/ms2m/ms2m/internal/deploy"
	"github.com/ms2m/ms2m/internal/lab"
	"github.com/ms2m/ms2m/internal/lab/supervise"
	"github.com/ms2m/ms2m/internal/migration"
)

// A fault is one part of the lab breaking while a migration runs under a
// producer. Kills are healed by what heals them in a cluster (the kubelet
// restarts a container, the lab's supervisor a node daemon or the broker);
// a cut lasts hold, then the link comes back.
type fault struct {
	name string
	// inject breaks the part; it returns the cut to end after hold, if any.
	inject func(ctx context.Context, t *testing.T) *cut
	hold   time.Duration
}

var (
	managerKilled = fault{name: "manager killed", inject: func(ctx context.Context, t *testing.T) *cut {
		killContainer(ctx, t, lab.Namespace, map[string]string{"app.kubernetes.io/name": "ms2m-manager"}, "", "manager")
		return nil
	}}
	sourceAgentKilled = fault{name: "source agent killed", inject: func(ctx context.Context, t *testing.T) *cut {
		killContainer(ctx, t, lab.Namespace, map[string]string{"app.kubernetes.io/name": "ms2m-agent"}, "node-a", "agent")
		return nil
	}}
	targetAgentKilled = fault{name: "target agent killed", inject: func(ctx context.Context, t *testing.T) *cut {
		killContainer(ctx, t, lab.Namespace, map[string]string{"app.kubernetes.io/name": "ms2m-agent"}, "node-b", "agent")
		return nil
	}}
	brokerKilled = fault{name: "RabbitMQ killed", inject: func(ctx context.Context, t *testing.T) *cut {
		killSupervised(ctx, t, "rabbitmq")
		return nil
	}}
	targetKubeletKilled = fault{name: "target kubelet killed", inject: func(ctx context.Context, t *testing.T) *cut {
		killSupervised(ctx, t, "kubelet-node-b")
		return nil
	}}
	targetContainerdKilled = fault{name: "target containerd killed", inject: func(ctx context.Context, t *testing.T) *cut {
		killSupervised(ctx, t, "containerd-node-b")
		return nil
	}}
	// The nodes' pod networks are cut apart: the agents, and whatever of
	// the manager's traffic crosses between the nodes.
	nodesCutApart = fault{name: "nodes cut apart 20 s", hold: 20 * time.Second, inject: func(ctx context.Context, t *testing.T) *cut {
		c := newCut(t, "ms2m-e2e-nodes-cut", "link between node-a and node-b", func(context.Context) string {
			return forwardDrop(subnet("node-a"), subnet("node-b"))
		})
		c.start(ctx)
		return c
	}}
	// node-b's pods lose the broker (AMQP and its management API) both
	// ways: the target consumer and the target agent's broker calls.
	targetCutFromBroker = fault{name: "target cut from the broker 20 s", hold: 20 * time.Second, inject: func(ctx context.Context, t *testing.T) *cut {
		rmq := labCfg.RabbitMQ()
		c := newCut(t, "ms2m-e2e-broker-cut", "link between node-b and the broker", func(context.Context) string {
			ports := fmt.Sprintf("{ %d, %d }", rmq.Port, rmq.MgmtPort)
			return fmt.Sprintf(" chain input {\n  type filter hook input priority -10\n  ip saddr %s tcp dport %s drop\n }\n"+
				" chain output {\n  type filter hook output priority -10\n  ip daddr %s tcp sport %s drop\n }\n",
				subnet("node-b"), ports, subnet("node-b"), ports)
		})
		c.start(ctx)
		return c
	}}
)

// A cell is one fault injected once the migration has reached phase.
type cell struct {
	fault fault
	phase v1alpha1.Phase
	// kind and the spec of the migration (ShadowPod Deployment, Registry
	// transfer, when empty).
	kind string
	spec v1alpha1.StatefulMigrationSpec
	// state is the consumer's memory: large enough that the short phases
	// last long enough to be hit.
	state string
}

func (c cell) name() string {
	s := strings.ReplaceAll(c.fault.name, " ", "-") + "/" + string(c.phase)
	if c.spec.MemoryTechnique != "" {
		s += "-" + string(c.spec.MemoryTechnique)
	}
	if c.kind != "" && c.kind != demo.KindDeployment {
		s += "-" + c.kind
	}
	return s
}

var phaseOrder = []v1alpha1.Phase{v1alpha1.PhasePending, v1alpha1.PhaseCheckpointing, v1alpha1.PhaseTransferring,
	v1alpha1.PhaseRestoring, v1alpha1.PhaseReplaying, v1alpha1.PhaseFinalizing}

// outcomeBound is the longest a migration may take from the fault to its
// end: the longest phase timeout (Restoring's 3 min) and a rollback.
const outcomeBound = 5 * time.Minute

// row is one cell's result, for the committed table.
type row struct {
	cell       cell
	hitIn      v1alpha1.Phase
	outcome    string
	reason     string
	toOutcome  time.Duration
	lost, dups int64
	digest     bool
	leftovers  []string
	problems   []string
}

// runCell migrates a consumer under a 20 msg/s producer, injects the fault
// when the migration reaches the cell's phase, and checks the contract:
// an end within outcomeBound (Completed, rolled back with the source
// serving, or failed forward with the target serving), every message
// applied once, and nothing left behind.
func runCell(t *testing.T, c cell) row {
	t.Helper()
	waitLabHealthy(t)
	r := row{cell: c}
	if c.kind == "" {
		c.kind = demo.KindDeployment
	}
	if c.spec.TransferMode == "" {
		c.spec.TransferMode = v1alpha1.TransferRegistry
	}
	if c.state == "" {
		c.state = "64Mi"
	}
	rmq := labCfg.RabbitMQ()
	ns := "fault-" + strings.ToLower(strings.NewReplacer("_", "-", "/", "-", " ", "-").Replace(c.name()))
	// A namespace of its own per run: what an earlier run left must not
	// count against this one.
	ns = strings.TrimRight(ns[:min(len(ns), 57)], "-") + "-" + rand.Text()[:5]
	ns = strings.ToLower(ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("MS2M_FAULTS_KEEP") != "" {
			t.Logf("namespace %s kept for a look (MS2M_FAULTS_KEEP)", ns)
			return
		}
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	before := snapshotLeftovers(t)
	spec := c.spec
	spec.TargetNode, spec.ReplayCutoffSeconds = "node-b", 30
	var injected time.Time
	var heal *cut
	res, err := demo.Run(ctx, demo.Options{Client: k8s, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), Exchange: "faults",
		Workload: demo.Workload{Kind: c.kind, Namespace: ns, Name: "consumer", Image: images["consumer"], AMQPURL: rmq.AMQPURL(),
			Queue: ns, Delay: 10 * time.Millisecond, StateBytes: c.state, Prefetch: 10, Node: "node-a"},
		Spec: spec, Rate: 20, Warmup: 3 * time.Second, Settle: 3 * time.Second, Timeout: outcomeBound, Out: testWriter{t},
		During: func(ctx context.Context, m *v1alpha1.StatefulMigration) {
			if !injected.IsZero() || slices.Index(phaseOrder, m.Status.Phase) < slices.Index(phaseOrder, c.phase) {
				return
			}
			injected, r.hitIn = time.Now(), m.Status.Phase
			t.Logf("%s: %s while %s", injected.Format("15:04:05.000"), c.fault.name, m.Status.Phase)
			if heal = c.fault.inject(ctx, t); heal != nil {
				time.AfterFunc(c.fault.hold, heal.end)
			}
		}})
	if heal != nil {
		// The migration may end before the link comes back: the checks
		// below need the link.
		for heal.happened() && time.Since(injected) < c.fault.hold {
			time.Sleep(200 * time.Millisecond)
		}
		heal.end()
	}
	if res == nil || res.Migration == nil {
		r.outcome = "no migration"
		r.problems = append(r.problems, fmt.Sprint(err))
		return r
	}
	m := res.Migration
	if injected.IsZero() {
		r.problems = append(r.problems, fmt.Sprintf("the migration ended (%s) before reaching %s: no fault injected", m.Status.Phase, c.phase))
	} else if m.Status.CompletionTime != nil {
		r.toOutcome = m.Status.CompletionTime.Sub(injected).Round(time.Second)
	}
	switch {
	case m.Status.Phase == v1alpha1.PhaseCompleted:
		r.outcome = "Completed"
	case m.Status.Phase != v1alpha1.PhaseFailed:
		r.outcome = "stuck in " + string(m.Status.Phase)
	case rolledBackOK(m):
		r.outcome = "RolledBack"
	case m.Status.TargetPod != "" && migration.PastPointOfNoReturn(&m.Status):
		r.outcome = "FailedForward"
	default:
		r.outcome = "Failed, not rolled back"
	}
	r.reason = m.Status.FailureReason
	if err != nil && m.Status.Phase != v1alpha1.PhaseFailed {
		r.problems = append(r.problems, err.Error())
	}
	r.lost, r.dups, r.digest = res.Lost, res.Duplicated, res.DigestMatch
	if res.Lost != 0 || res.Duplicated != 0 || !res.DigestMatch {
		r.problems = append(r.problems, fmt.Sprintf("on %s: lost=%d duplicated=%d digest match=%v (%v)", res.Serving, res.Lost, res.Duplicated, res.DigestMatch, err))
	}
	if !strings.HasPrefix(r.outcome, "Completed") && r.outcome != "RolledBack" && r.outcome != "FailedForward" {
		r.problems = append(r.problems, "ended "+r.outcome)
	}
	r.leftovers = leftovers(ctx, t, before, m, ns, c.kind)
	return r
}

func rolledBackOK(m *v1alpha1.StatefulMigration) bool {
	return apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.ConditionRolledBack)
}

func subnet(node string) string {
	for _, n := range labCfg.Nodes {
		if n.Name == node {
			return n.Subnet
		}
	}
	panic("no lab node " + node)
}

// killContainer SIGKILLs the running container named container of the pod
// selected by labels (on node, when not empty), through the runtime of
// the pod's node: the process dies as from the OOM killer.
func killContainer(ctx context.Context, t *testing.T, namespace string, labels map[string]string, node, container string) {
	t.Helper()
	task, pod := runningTask(ctx, t, namespace, labels, node, container)
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("killing %s/%s: %v", pod, container, err)
	}
	t.Logf("killed %s/%s (pid %d)", pod, container, task.Pid())
}

// runningTask finds the running task of container in the pod selected by
// labels (on node, when not empty) through its node's containerd.
func runningTask(ctx context.Context, t *testing.T, namespace string, labels map[string]string, node, container string) (containerd.Task, string) {
	t.Helper()
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(namespace), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || node != "" && p.Spec.NodeName != node {
			continue
		}
		cl, err := containerd.New(labCfg.NodeParams(labNode(p.Spec.NodeName)).Socket(), containerd.WithDefaultNamespace("k8s.io"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		cs, err := cl.Containers(ctx, fmt.Sprintf(`labels."io.kubernetes.pod.uid"==%s,labels."io.kubernetes.container.name"==%s`, p.UID, container))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			task, err := c.Task(ctx, nil)
			if err != nil {
				continue // exited earlier
			}
			if st, err := task.Status(ctx); err == nil && st.Status == containerd.Running {
				return task, p.Spec.NodeName + "/" + p.Name
			}
		}
	}
	t.Fatalf("no running %s container in %s with labels %v on %q", container, namespace, labels, node)
	return nil, ""
}

func labNode(name string) lab.Node {
	for _, n := range labCfg.Nodes {
		if n.Name == name {
			return n
		}
	}
	panic("no lab node " + name)
}

// killSupervised SIGKILLs one of the lab's daemons; the supervisor starts
// it again, as a node's init system would.
func killSupervised(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	st, err := supervise.Open(labCfg.RunDir()).State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Procs {
		if p.Name == name && p.Alive() {
			if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed %s (pid %d)", name, p.PID)
			return
		}
	}
	t.Fatalf("%s does not run", name)
}

// waitLabHealthy waits until every part of the lab answers again after the
// last fault: its daemons, both nodes Ready, the manager and the agents.
func waitLabHealthy(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var last string
	for {
		st, err := lab.GetStatus(ctx, labCfg.Dir)
		last = fmt.Sprint(err)
		if err == nil {
			var sick []string
			for _, c := range st.Components {
				if !c.Healthy && c.Name != "capabilities" {
					sick = append(sick, c.Name+": "+c.Detail)
				}
			}
			last = strings.Join(sick, "; ")
			if len(sick) == 0 && nodesReady(ctx) {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the lab is not healthy: %s", last)
		case <-time.After(time.Second):
		}
	}
	if err := deploy.WaitReady(ctx, k8s, lab.Namespace, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}

func nodesReady(ctx context.Context) bool {
	nodes := &corev1.NodeList{}
	if err := k8s.List(ctx, nodes); err != nil {
		return false
	}
	for _, n := range nodes.Items {
		if !slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}) {
			return false
		}
	}
	return len(nodes.Items) == len(labCfg.Nodes)
}

// reportRows reports the matrix's table.
func reportRows(t *testing.T, title string, rows []row) {
	var b strings.Builder
	fmt.Fprintf(&b, "| fault | phase hit | outcome | reason | fault → end | lost | dup | digest | left behind |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		left := "nothing"
		if len(r.leftovers) > 0 {
			left = strings.Join(summarizeFiles(r.leftovers), "; ")
		}
		hit := string(r.hitIn)
		if r.cell.spec.MemoryTechnique != "" {
			hit += " (" + string(r.cell.spec.MemoryTechnique) + ")"
		}
		if r.cell.kind != "" && r.cell.kind != demo.KindDeployment {
			hit += ", " + r.cell.kind
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %d | %v | %s |\n", r.cell.fault.name, hit, r.outcome, orDash(r.reason),
			r.toOutcome, r.lost, r.dups, r.digest, left)
	}
	report(t, title, b.String())
}

// report logs a table and appends it to MS2M_FAULTS_REPORT, when set.
func report(t *testing.T, title, table string) {
	t.Logf("%s\n%s", title, table)
	if path := os.Getenv("MS2M_FAULTS_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "\n## %s\n\n%s", title, table)
	}
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// faultCells are the matrix: every fault in every phase of a ShadowPod
// Deployment (Registry transfer), the faults that meet a post-copy page
// stream in the middle of it, and a Sequential StatefulSet's restore.
// MS2M_FAULTS=full runs them all; by default one fault per part of the
// system runs, in the phase where it does the most harm.
func faultCells() []cell {
	all := []fault{managerKilled, sourceAgentKilled, targetAgentKilled, brokerKilled, targetKubeletKilled,
		targetContainerdKilled, nodesCutApart, targetCutFromBroker}
	switch os.Getenv("MS2M_FAULTS") {
	case "off":
		return nil
	case "full":
		var cells []cell
		for _, f := range all {
			for _, ph := range phaseOrder[1:] {
				cells = append(cells, cell{fault: f, phase: ph})
			}
		}
		if labCfg.RuntimeHandler != "" {
			postCopy := v1alpha1.StatefulMigrationSpec{TransferMode: v1alpha1.TransferDirect, MemoryTechnique: v1alpha1.MemoryPostCopy}
			for _, f := range []fault{sourceAgentKilled, targetAgentKilled, nodesCutApart, targetContainerdKilled} {
				cells = append(cells, cell{fault: f, phase: v1alpha1.PhaseRestoring, spec: postCopy, state: "256Mi"})
			}
		}
		for _, f := range []fault{managerKilled, targetKubeletKilled, brokerKilled} {
			cells = append(cells, cell{fault: f, phase: v1alpha1.PhaseRestoring, kind: demo.KindStatefulSet})
		}
		return cells
	default:
		return []cell{
			{fault: managerKilled, phase: v1alpha1.PhaseReplaying},
			{fault: sourceAgentKilled, phase: v1alpha1.PhaseCheckpointing},
			{fault: targetAgentKilled, phase: v1alpha1.PhaseTransferring},
			{fault: brokerKilled, phase: v1alpha1.PhaseReplaying},
			{fault: targetKubeletKilled, phase: v1alpha1.PhaseRestoring},
			{fault: targetContainerdKilled, phase: v1alpha1.PhaseRestoring},
			{fault: nodesCutApart, phase: v1alpha1.PhaseTransferring},
			{fault: targetCutFromBroker, phase: v1alpha1.PhaseReplaying},
		}
	}
}

// Each part of the lab breaks while a consumer migrates under a producer:
// every migration ends within outcomeBound, completed or rolled back with
// the source serving or failed forward with the target serving, every
// message applied once, nothing left behind. The table goes to the log
// and to MS2M_FAULTS_REPORT.
func TestFaults(t *testing.T) {
	cells := faultCells()
	if len(cells) == 0 {
		t.Skip("MS2M_FAULTS=off")
	}
	if only := os.Getenv("MS2M_FAULTS_ONLY"); only != "" {
		cells = slices.DeleteFunc(cells, func(c cell) bool { return !strings.Contains(c.name(), only) })
	}
	var rows []row
	t.Cleanup(func() { reportRows(t, fmt.Sprintf("%d faults (%s)", len(rows), labRuntime()), rows) })
	for _, c := range cells {
		t.Run(c.name(), func(t *testing.T) {
			r := runCell(t, c)
			rows = append(rows, r)
			for _, p := range r.problems {
				t.Error(p)
			}
			if len(r.leftovers) > 0 {
				t.Errorf("left behind: %s", strings.Join(r.leftovers, "; "))
			}
			t.Logf("%s → %s %s in %s", c.name(), r.outcome, r.reason, r.toOutcome)
		})
	}
}

func labRuntime() string {
	s := "containerd " + labCfg.Containerd
	if labCfg.RuntimeHandler != "" {
		s += ", ms2m runtime handler"
	}
	return s
}

// summarizeFiles folds the checkpoint files left in one dump directory
// (CRIU's images, its work files) into one entry.
func summarizeFiles(left []string) []string {
	var out []string
	count := map[string]int{}
	for _, l := range left {
		path, ok := strings.CutPrefix(l, "checkpoint file ")
		dir, _, cut := strings.Cut(path, "/checkpoint/")
		if !cut {
			dir, _, cut = strings.Cut(path, "/work/")
		}
		if !ok || !cut {
			out = append(out, l)
			continue
		}
		if count[dir] == 0 {
			out = append(out, dir)
		}
		count[dir]++
	}
	for i, o := range out {
		if n := count[o]; n > 0 {
			out[i] = fmt.Sprintf("%d checkpoint files under %s/", n, o)
		}
	}
	return out
}
