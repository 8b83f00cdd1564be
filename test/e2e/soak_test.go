//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
	"github.com/ms2m/ms2m/internal/lab"
)

// usage is one sample of what the soak watches grow.
type usage struct {
	after int // migrations done
	// the manager's, from its metrics
	managerRSS, managerGoroutines, managerFDs int64
	// each agent's, from /proc (the agents export no metrics)
	agentRSS, agentThreads, agentFDs map[string]int64
	queues, messages                 int64
}

// One consumer moves back and forth between node-a and node-b
// MS2M_SOAK times (100 in `make test-faults`) under a 40 msg/s producer,
// with state: the last target has applied every message once, and
// neither the manager, the agents nor the broker grew, sampled every ten
// migrations once the first ten have warmed them up.
func TestSoak(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MS2M_SOAK"))
	if n <= 0 {
		t.Skip("MS2M_SOAK (the number of migrations) is not set")
	}
	waitLabHealthy(t)
	rmq := labCfg.RabbitMQ()
	ns := "soak"
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*time.Minute+10*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	before := snapshotLeftovers(t)
	var samples []usage
	started := time.Now()
	res, err := demo.Run(ctx, demo.Options{Client: k8s, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), Exchange: "soak",
		Workload: demo.Workload{Kind: demo.KindDeployment, Namespace: ns, Name: "consumer", Image: images["consumer"], AMQPURL: rmq.AMQPURL(),
			Queue: ns, Delay: 10 * time.Millisecond, StateBytes: "16Mi", Prefetch: 10, Node: "node-a"},
		Spec: v1alpha1.StatefulMigrationSpec{TargetNode: "node-b", ReplayCutoffSeconds: 30}, Rate: 40, Warmup: 3 * time.Second,
		Settle: 3 * time.Second, Timeout: outcomeBound, Out: testWriter{t}, Migrations: n,
		AfterEach: func(ctx context.Context, i int, m *v1alpha1.StatefulMigration) error {
			if m.Status.Phase != v1alpha1.PhaseCompleted {
				t.Errorf("migration %d (%s) ended %s: %s: %s", i+1, m.Name, m.Status.Phase, m.Status.FailureReason, m.Status.FailureMessage)
			}
			if (i+1)%10 == 0 {
				s := sample(ctx, t, i+1)
				samples = append(samples, s)
				t.Logf("after %d migrations (%s): %s", i+1, time.Since(started).Round(time.Second), s)
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failures > 0 || res.Lost != 0 || res.Duplicated != 0 || !res.DigestMatch {
		t.Errorf("%d migrations, %d failed; on %s: lost=%d duplicated=%d digest match=%v", n, res.Failures, res.Serving, res.Lost, res.Duplicated, res.DigestMatch)
	}
	t.Logf("%d migrations in %s, %d messages applied once each", n, time.Since(started).Round(time.Second), res.Applied)
	if left := leftovers(ctx, t, before, res.Migration, ns, demo.KindDeployment); len(left) > 0 {
		t.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	reportSoak(t, n, time.Since(started), samples)
	if len(samples) < 2 {
		return
	}
	// Compared with the sample after the first ten migrations: a leak of a
	// goroutine, a file or a queue per migration shows as n-10 more.
	first, last := samples[0], samples[len(samples)-1]
	grew := func(what string, a, b, slack int64) {
		if b > a+slack {
			t.Errorf("%s grew from %d to %d over %d migrations", what, a, b, last.after-first.after)
		}
	}
	grew("the manager's goroutines", first.managerGoroutines, last.managerGoroutines, 20)
	grew("the manager's open files", first.managerFDs, last.managerFDs, 10)
	grew("the manager's resident memory", first.managerRSS, last.managerRSS, first.managerRSS/2)
	for node := range first.agentRSS {
		grew(node+"'s agent's threads", first.agentThreads[node], last.agentThreads[node], 10)
		grew(node+"'s agent's open files", first.agentFDs[node], last.agentFDs[node], 10)
		grew(node+"'s agent's resident memory", first.agentRSS[node], last.agentRSS[node], first.agentRSS[node]/2)
	}
	grew("the broker's queues", first.queues, last.queues, 0)
	grew("the broker's queued messages", first.messages, last.messages, 200)
}

func sample(ctx context.Context, t *testing.T, after int) usage {
	t.Helper()
	u := usage{after: after, agentRSS: map[string]int64{}, agentThreads: map[string]int64{}, agentFDs: map[string]int64{}}
	m := managerMetrics(ctx, t)
	u.managerRSS, u.managerGoroutines, u.managerFDs = m["process_resident_memory_bytes"], m["go_goroutines"], m["process_open_fds"]
	for _, n := range labCfg.Nodes {
		task, _ := runningTask(ctx, t, lab.Namespace, map[string]string{"app.kubernetes.io/name": "ms2m-agent"}, n.Name, "agent")
		pid := int(task.Pid())
		u.agentRSS[n.Name], u.agentThreads[n.Name] = procStatus(pid, "VmRSS")*1024, procStatus(pid, "Threads")
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			u.agentFDs[n.Name] = int64(len(fds))
		}
	}
	var qs []struct {
		Name     string
		Messages int64
	}
	mgmtGet(t, "/api/queues/%2F", &qs)
	for _, q := range qs {
		u.queues++
		u.messages += q.Messages
	}
	return u
}

func (u usage) String() string {
	s := fmt.Sprintf("manager %d MiB, %d goroutines, %d fds", u.managerRSS>>20, u.managerGoroutines, u.managerFDs)
	for _, n := range labCfg.Nodes {
		s += fmt.Sprintf("; %s agent %d MiB, %d threads, %d fds", n.Name, u.agentRSS[n.Name]>>20, u.agentThreads[n.Name], u.agentFDs[n.Name])
	}
	return s + fmt.Sprintf("; broker %d queues, %d messages", u.queues, u.messages)
}

// procStatus reads a number field of /proc/PID/status.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// managerMetrics reads the gauges of the running manager's /metrics.
func managerMetrics(ctx context.Context, t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, fams := range managerFamilies(ctx, t) {
		for _, name := range []string{"process_resident_memory_bytes", "go_goroutines", "process_open_fds"} {
			if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
				out[name] = int64(f.GetMetric()[0].GetGauge().GetValue())
			}
		}
	}
	return out
}

// reportSoak adds the samples to MS2M_FAULTS_REPORT, when set.
func reportSoak(t *testing.T, n int, took time.Duration, samples []usage) {
	var b strings.Builder
	fmt.Fprintf(&b, "| after | manager MiB | goroutines | fds |")
	for _, nd := range labCfg.Nodes {
		fmt.Fprintf(&b, " %s agent MiB | threads | fds |", nd.Name)
	}
	fmt.Fprintf(&b, " broker queues | messages |\n|---|---|---|---|")
	for range labCfg.Nodes {
		b.WriteString("---|---|---|")
	}
	b.WriteString("---|---|\n")
	for _, u := range samples {
		fmt.Fprintf(&b, "| %d | %d | %d | %d |", u.after, u.managerRSS>>20, u.managerGoroutines, u.managerFDs)
		for _, nd := range labCfg.Nodes {
			fmt.Fprintf(&b, " %d | %d | %d |", u.agentRSS[nd.Name]>>20, u.agentThreads[nd.Name], u.agentFDs[nd.Name])
		}
		fmt.Fprintf(&b, " %d | %d |\n", u.queues, u.messages)
	}
	report(t, fmt.Sprintf("Soak: %d migrations back to back in %s (%s)", n, took.Round(time.Second), labRuntime()), b.String())
}
