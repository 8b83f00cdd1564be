package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
)

func demoCommand() *cobra.Command {
	var (
		kind, strategy, transfer, replay, swap, engine, handoff, memory, state, repo string
		rate, cutoff                                                                 int
		delay, warmup, settle                                                        time.Duration
		noUp                                                                         bool
	)
	cmd := &cobra.Command{
		Use: "demo",
		Example: `  ms2m demo --workload Deployment
  ms2m demo --workload StatefulSet --no-up --transfer Direct --state 512Mi
  ms2m demo --workload Deployment --rate 120 --handoff Handoff`,
		Short: "Bring up the lab, deploy ms2m and a live consumer/producer, migrate the consumer, and report",
		Long: `The demo migration: a consumer fed by a producer at --rate msg/s moves from node-a
to node-b while HTTP probes (every 10 ms, 1 s timeout) and the message digest
measure what a client and the stream see. The last line is machine-readable:
RESULT strategy=... transfer=... lost=N duplicated=N digest=match|mismatch downtime_ms=N stall_ms=N gap_ms=N total_ms=N phase=Completed|Failed`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, images, cl, err := labWithMS2M(ctx, noUp, repo)
			if err != nil {
				return err
			}
			rmq := c.RabbitMQ()
			res, err := demo.Run(ctx, demo.Options{
				Client: cl, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), Exchange: "ms2m.demo",
				Workload: demo.Workload{Kind: kind, Namespace: "ms2m-demo", Name: "consumer", Image: images["consumer"],
					AMQPURL: rmq.AMQPURL(), Queue: "ms2m-demo.orders", Delay: delay, StateBytes: state, Prefetch: 10, Node: "node-a"},
				Spec: v1alpha1.StatefulMigrationSpec{TargetNode: "node-b", MigrationStrategy: v1alpha1.MigrationStrategy(strategy),
					TransferMode: v1alpha1.TransferMode(transfer), ReplayMode: v1alpha1.ReplayMode(replay),
					IdentitySwapMode: v1alpha1.IdentitySwapMode(swap), ReplayCutoffSeconds: int32(cutoff),
					CheckpointEngine: v1alpha1.CheckpointEngine(engine), Handoff: v1alpha1.Handoff(handoff),
					MemoryTechnique: v1alpha1.MemoryTechnique(memory)},
				Rate: rate, Warmup: warmup, Settle: settle, Timeout: 5 * time.Minute, Out: os.Stderr,
			})
			if res != nil && res.Migration != nil && res.Migration.Status.Phase.IsFinal() {
				demo.Report(os.Stdout, res)
			}
			if err != nil {
				return err
			}
			if res.Lost != 0 || res.Duplicated != 0 || !res.DigestMatch {
				return fmt.Errorf("the correctness contract was broken: lost=%d duplicated=%d digest match=%v", res.Lost, res.Duplicated, res.DigestMatch)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kind, "workload", demo.KindPod, "Pod, Deployment or StatefulSet")
	f.StringVar(&strategy, "strategy", "", "ShadowPod or Sequential (default: from the workload)")
	f.StringVar(&transfer, "transfer", "Registry", "Registry or Direct")
	f.StringVar(&replay, "replay", "Cutoff", "Cutoff or Drain")
	f.StringVar(&swap, "identity-swap", "", "None or ExchangeFence (StatefulSet ShadowPod)")
	f.StringVar(&engine, "checkpoint-engine", "", "Runc or Kubelet (default: Runc where the source node can)")
	f.StringVar(&handoff, "handoff", "", "Replay or Handoff (default: Auto)")
	f.StringVar(&memory, "memory", "", "StopAndCopy, Stream or PostCopy (default: Auto, which is StopAndCopy); Stream and PostCopy need the Runc checkpoint engine")
	f.IntVar(&cutoff, "cutoff", 30, "replay cutoff in seconds")
	f.IntVar(&rate, "rate", 10, "messages per second")
	f.DurationVar(&delay, "delay", 20*time.Millisecond, "processing time per message (consumer capacity = 1/delay)")
	f.StringVar(&state, "state", "1Mi", "in-memory state of the consumer")
	f.DurationVar(&warmup, "warmup", 5*time.Second, "production before the migration")
	f.DurationVar(&settle, "settle", 2*time.Second, "production after the migration")
	f.BoolVar(&noUp, "no-up", false, "use the running lab as it is")
	f.StringVar(&repo, "repo", "", "ms2m source tree (default: found from the working directory)")
	return cmd
}
