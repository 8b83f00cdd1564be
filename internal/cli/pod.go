package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func newPodCommand(e *env) *cobra.Command {
	var (
		to, strategy, transfer, replay, repo string
		cutoff                               int32
		wait                                 bool
		timeout                              time.Duration
		stream                               StreamFlags
	)
	cmd := &cobra.Command{
		Use: "pod NAME --to NODE",
		Example: `  kubectl migrate pod consumer-0 --to node-b --wait
  kubectl migrate pod consumer-0 --to node-b --transfer Direct --queue orders --broker-url amqp://rabbitmq:5672/`,
		Short: "Migrate a pod to another node",
		Long: `Creates a StatefulMigration for the pod. Broker settings come from the flags or,
when omitted, from the pod's annotations (migration.ms2m.io/broker-url, /queue,
/exchange, /routing-key, /credentials-secret). Without --to, ms2m picks a node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			pod := &corev1.Pod{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: args[0]}, pod); err != nil {
				return fmt.Errorf("pod %s/%s: %w", ns, args[0], err)
			}
			m := &v1alpha1.StatefulMigration{
				ObjectMeta: metav1.ObjectMeta{GenerateName: truncate(pod.Name, 50) + "-", Namespace: ns},
				Spec: v1alpha1.StatefulMigrationSpec{
					SourcePod: pod.Name, TargetNode: to, MigrationStrategy: v1alpha1.MigrationStrategy(strategy),
					TransferMode: v1alpha1.TransferMode(transfer), ReplayMode: v1alpha1.ReplayMode(replay),
					ReplayCutoffSeconds: cutoff, CheckpointImageRepository: repo,
					MessageQueueConfig: stream.MessageQueueConfig(pod),
				},
			}
			if timeout > 0 {
				m.Spec.Timeouts = &v1alpha1.MigrationTimeouts{Total: &metav1.Duration{Duration: timeout}}
			}
			if err := c.Create(ctx, m); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "statefulmigration.migration.ms2m.io/%s created\n", m.Name)
			if !wait {
				return nil
			}
			return watchStatus(ctx, e, c, client.ObjectKeyFromObject(m), true, "")
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "target node (empty: ms2m chooses)")
	f.StringVar(&strategy, "strategy", "", "ShadowPod or Sequential (empty: from the pod's owner)")
	f.StringVar(&transfer, "transfer", "", "Registry or Direct (default Registry)")
	f.StringVar(&replay, "replay", "", "Cutoff or Drain (default Cutoff)")
	f.Int32Var(&cutoff, "cutoff", 0, "replay cutoff in seconds (default 120)")
	f.StringVar(&repo, "repository", "", "checkpoint image repository for Registry transfers")
	f.DurationVar(&timeout, "timeout", 0, "bound for the whole migration (default 20m)")
	f.BoolVarP(&wait, "wait", "w", false, "follow the migration until it ends")
	f.StringVar(&stream.BrokerURL, "broker-url", "", "broker URL (amqp://...)")
	f.StringVar(&stream.Queue, "queue", "", "queue the pod consumes")
	f.StringVar(&stream.Exchange, "exchange", "", "exchange the producer publishes to")
	f.StringVar(&stream.RoutingKey, "routing-key", "", "routing key binding the queue")
	f.StringVar(&stream.CredentialsSecret, "credentials-secret", "", "Secret with the broker's username and password")
	f.StringVar(&stream.ManagementURL, "management-url", "", "RabbitMQ management API URL")
	return cmd
}

func newCancelCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "cancel NAME",
		Example: `  kubectl migrate cancel consumer-0-x7k2q`,
		Short:   "Abort a migration: before cutover it rolls back and the source keeps serving",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.client()
			if err != nil {
				return err
			}
			m := &v1alpha1.StatefulMigration{}
			if err := c.Get(cmd.Context(), client.ObjectKey{Namespace: ns, Name: args[0]}, m); err != nil {
				return err
			}
			if m.Status.Phase.IsFinal() {
				return fmt.Errorf("migration %s already ended (%s)", m.Name, m.Status.Phase)
			}
			patch := client.MergeFrom(m.DeepCopy())
			m.Spec.Abort = true
			if err := c.Patch(cmd.Context(), m, patch); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "abort requested for %s (phase %s); `kubectl migrate status %s` shows the outcome\n", m.Name, m.Status.Phase, m.Name)
			return nil
		},
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
