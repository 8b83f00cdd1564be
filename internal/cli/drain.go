package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/drain"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/evacuation"
)

// DrainOptions are `migrate drain`'s flags.
type DrainOptions struct {
	// PodSelector limits the drain to the pods it selects (kubectl
	// drain's --pod-selector).
	PodSelector string
	// DeleteEmptyDirData lets pods with emptyDir volumes go (their data
	// is lost; a migrated pod's memory is not).
	DeleteEmptyDirData bool
	// Timeout bounds the whole drain (0: none).
	Timeout time.Duration
}

func newDrainCommand(e *env) *cobra.Command {
	var o DrainOptions
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Drain a node: pods that opted in are migrated off it, the rest are evicted",
		Long: `drain cordons NODE and evicts its pods the way kubectl drain does (its own
code), DaemonSet pods left alone. A pod that opted in to migrating (label
migration.ms2m.io/on-eviction, or its MigrationPolicy's evictionStrategy)
is migrated off the node by ms2m instead, while its eviction is retried;
each such migration is shown as it passes its phases, and summed up at the
end.`,
		Example: `  kubectl migrate drain node-a
  kubectl migrate drain node-a --pod-selector app=consumer --timeout 10m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := e.flags.ToRESTConfig()
			if err != nil {
				return err
			}
			c, _, err := e.client()
			if err != nil {
				return err
			}
			return Drain(cmd.Context(), cfg, c, args[0], o, e.out)
		},
	}
	cmd.Flags().StringVar(&o.PodSelector, "pod-selector", "", "drain only the pods this label selector selects")
	cmd.Flags().BoolVar(&o.DeleteEmptyDirData, "delete-emptydir-data", false, "evict pods with emptyDir volumes too (their emptyDir data is lost)")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 0, "give up after this long (0: never)")
	return cmd
}

// Drain cordons node and evicts its pods with kubectl drain's own code
// (k8s.io/kubectl/pkg/drain), which retries an eviction refused with 429:
// ms2m's eviction webhook refuses so while it migrates a pod that opted
// in. The migrations the drain starts are followed on out as they go.
func Drain(ctx context.Context, cfg *rest.Config, c client.Client, node string, o DrainOptions, out io.Writer) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	// Everything is said through quiet, which holds a lock: the drain's
	// evictions, their callbacks and the follower write from goroutines of
	// their own.
	quiet := &firstSaid{w: out, said: map[string]bool{}}
	h := &drain.Helper{Ctx: ctx, Client: cs, GracePeriodSeconds: -1, IgnoreAllDaemonSets: true,
		DeleteEmptyDirData: o.DeleteEmptyDirData, PodSelector: o.PodSelector, Timeout: o.Timeout, Out: quiet, ErrOut: quiet,
		// kubectl drain's own pace (the library's default is none at all).
		EvictErrorRetryDelay: 5 * time.Second,
		OnPodDeletionOrEvictionFinished: func(pod *corev1.Pod, _ bool, err error) {
			if err == nil {
				fmt.Fprintf(quiet, "pod %s/%s is off %s\n", pod.Namespace, pod.Name, node)
			}
		}}
	if err := drain.RunCordonOrUncordon(h, n, true); err != nil {
		return fmt.Errorf("cordoning %s: %w", node, err)
	}
	fmt.Fprintf(quiet, "node %s cordoned\n", node)
	fctx, stop := context.WithCancel(ctx)
	f := &follower{c: c, node: node, out: quiet, seen: map[string]string{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.run(fctx) }()
	err = drain.RunNodeDrain(h, node)
	stop()
	wg.Wait()
	f.look() // the last phases
	f.summary()
	if err != nil {
		return fmt.Errorf("draining %s: %w", node, err)
	}
	fmt.Fprintf(quiet, "node %s drained\n", node)
	return nil
}

// follower prints the phases of the migrations a drain of node started.
type follower struct {
	c    client.Client
	node string
	out  io.Writer
	seen map[string]string
	last []v1alpha1.StatefulMigration
}

// run looks every half second until stop ends. A look is never cut off
// midway (client-go would print the cancelled read on the user's terminal).
func (f *follower) run(stop context.Context) {
	for stop.Err() == nil {
		f.look()
		select {
		case <-stop.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (f *follower) look() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list v1alpha1.StatefulMigrationList
	if err := f.c.List(ctx, &list, client.MatchingLabels{evacuation.LabelEvictedFrom: f.node}); err != nil {
		return
	}
	f.last = list.Items
	for _, m := range list.Items {
		key := m.Namespace + "/" + m.Name
		state := string(m.Status.Phase)
		queued := queuedMessage(&m.Status)
		if queued != "" {
			state += ", queued"
		}
		if m.Status.Phase == "" || f.seen[key] == state {
			continue
		}
		f.seen[key] = state
		line := fmt.Sprintf("migration %s (pod %s): %s", key, m.Spec.SourcePod, m.Status.Phase)
		switch {
		case queued != "":
			line += ", queued: " + queued
		case m.Status.Phase == v1alpha1.PhaseCompleted:
			line += fmt.Sprintf(", now %s on %s", m.Status.TargetPod, m.Status.TargetNode)
		case m.Status.Phase == v1alpha1.PhaseFailed:
			line += fmt.Sprintf(": %s: %s", m.Status.FailureReason, m.Status.FailureMessage)
		case m.Status.TargetNode != "":
			line += " to " + m.Status.TargetNode
		}
		fmt.Fprintln(f.out, line)
	}
}

func (f *follower) summary() {
	if len(f.last) == 0 {
		return
	}
	sort.Slice(f.last, func(i, j int) bool { return f.last[i].Spec.SourcePod < f.last[j].Spec.SourcePod })
	fmt.Fprintf(f.out, "migrated off %s:\n", f.node)
	for _, m := range f.last {
		d := "-"
		if m.Status.TotalDuration != nil {
			d = fmtDuration(m.Status.TotalDuration.Duration)
		}
		fmt.Fprintf(f.out, "  %s/%s -> %s on %s: %s in %s\n", m.Namespace, m.Spec.SourcePod, orDash(m.Status.TargetPod), orDash(m.Status.TargetNode), m.Status.Phase, d)
	}
}

// firstSaid passes the drain's output on, but says "evicting pod X" and
// the refusal of X's eviction once per pod: kubectl drain repeats both at
// every retry, and the follower shows how the migration goes meanwhile.
type firstSaid struct {
	mu   sync.Mutex
	w    io.Writer
	said map[string]bool
}

func (f *firstSaid) Write(p []byte) (int, error) {
	line := string(p)
	key := ""
	switch {
	case strings.HasPrefix(line, "evicting pod "):
		key = line
	case strings.HasPrefix(line, "error when evicting pods/") && strings.Contains(line, "(will retry after"):
		key = line[:strings.Index(line, "(will retry after")]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if key != "" {
		if f.said[key] {
			return len(p), nil
		}
		f.said[key] = true
	}
	return f.w.Write(p)
}
