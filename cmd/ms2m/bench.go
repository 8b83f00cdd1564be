package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ms2m/ms2m/internal/bench"
	"github.com/ms2m/ms2m/internal/lab"
	labrabbitmq "github.com/ms2m/ms2m/internal/lab/rabbitmq"
	"github.com/ms2m/ms2m/internal/lab/registry"
)

func benchCommand() *cobra.Command {
	var (
		preset, config, out, repo string
		o                         bench.Preset
		retry, noUp, dryRun       bool
	)
	cmd := &cobra.Command{
		Use: "bench",
		Example: `  ms2m bench --preset quick --out /tmp/bench
  ms2m bench --preset memory --out docs/bench/memory --no-up`,
		Short: "Measure every migration mode across message rates and state sizes in the lab; CSV, report and plots",
		Long: `Runs the matrix of a preset (internal/bench/matrix.yaml, or --config): every
mode × message rate × consumer state size × repetition is one migration under
a live producer, measured as ` + "`make demo`" + ` measures it. Each run adds a row to
DIR/results.csv as it ends; running again on the same DIR skips the rows it
holds, so an interrupted matrix resumes. DIR/report.md and its plots compare
every mode with the stop-and-copy baseline and the MS2M configuration.

  ms2m bench --preset quick                 # under 10 minutes
  ms2m bench --preset full                  # the whole matrix, 3 repetitions (hours)
  ms2m bench --preset full --mode ms2m --rate 10,120 --state 512Mi
  ms2m bench --preset quick --out docs/bench/quick   # the committed report
  ms2m bench report --in docs/bench/quick   # redraw the report from the CSV`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := bench.LoadConfig(config)
			if err != nil {
				return err
			}
			m, err := cfg.Matrix(preset, o)
			if err != nil {
				return err
			}
			if out == "" {
				out = defaultBenchDir(preset)
			}
			if dryRun {
				rows, err := bench.ReadCSVFile(filepath.Join(out, bench.ResultsFile))
				if err != nil {
					return err
				}
				for _, r := range bench.Pending(m.Runs(), rows, retry) {
					fmt.Println(r)
				}
				return nil
			}
			c, images, cl, err := labWithMS2M(ctx, noUp, repo)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			logf, err := os.OpenFile(filepath.Join(out, bench.LogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			defer logf.Close()
			roots := map[string]string{}
			for _, n := range c.Nodes {
				roots[n.CgroupRoot] = n.Name
			}
			rmq := c.RabbitMQ()
			r := &bench.Runner{
				Lab: bench.Lab{Client: cl, AMQPURL: rmq.AMQPURL(), ManagementURL: rmq.MgmtURL(), ConsumerImage: images["consumer"], ProtocolConsumerImage: images["protocol-consumer"],
					SourceNode: "node-a", TargetNode: "node-b",
					BetweenRuns: func(ctx context.Context) error {
						_, err := registry.GarbageCollect(ctx, c.RegistryParams())
						return err
					}},
				Settings: cfg.Run,
				Meter:    bench.Meter{ProcRoot: "/proc", CgroupRoots: roots, Every: 100 * time.Millisecond},
				Log:      logf,
			}
			fmt.Fprintf(os.Stderr, "results in %s (each run's story in %s)\n", out, logf.Name())
			err = bench.Execute(ctx, r, bench.Options{Dir: out, Matrix: m, RetryFailed: retry, Progress: os.Stderr,
				Meta: bench.Meta{Command: "ms2m " + strings.Join(os.Args[1:], " "), Preset: preset, Config: cfg,
					Machine: bench.DescribeMachine(c.CapabilitiesFile(), c.KubeVersion, labrabbitmq.ServerVersion(ctx, c.RabbitMQ())), Commit: commit(repo), Started: time.Now()}})
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if cerr := r.Cleanup(cctx); cerr != nil {
				fmt.Fprintf(os.Stderr, "leaving namespace %s: %v\n", bench.Namespace, cerr)
			}
			if err == nil {
				fmt.Fprintf(os.Stderr, "report: %s\n", filepath.Join(out, bench.ReportFile))
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&preset, "preset", "quick", "quick (under 10 minutes), workloads, rate, or full (the whole matrix, hours)")
	f.StringVar(&config, "config", "", "matrix file: modes, presets, run settings (default: the built-in internal/bench/matrix.yaml)")
	f.StringSliceVar(&o.Modes, "mode", nil, "run only these modes (names from the config)")
	f.IntSliceVar(&o.Rates, "rate", nil, "message rates instead of the preset's, msg/s")
	f.StringSliceVar(&o.States, "state", nil, "consumer state sizes instead of the preset's (e.g. 1Mi,64Mi)")
	f.IntVar(&o.Reps, "reps", 0, "repetitions instead of the preset's")
	f.StringVar(&out, "out", "", "results directory; runs it holds are skipped (default: ~/.cache/ms2m/bench/PRESET)")
	f.BoolVar(&retry, "retry-failed", false, "run again the runs whose recorded row failed")
	f.BoolVar(&noUp, "no-up", false, "use the running lab as it is")
	f.BoolVar(&dryRun, "dry-run", false, "list the runs left to do and exit")
	f.StringVar(&repo, "repo", "", "ms2m source tree (default: found from the working directory)")
	cmd.AddCommand(benchReportCommand())
	return cmd
}

func benchReportCommand() *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:     "report",
		Example: `  ms2m bench report --out docs/bench/memory`,
		Short:   "Regenerate report.md and the plots from a results directory's CSV",
		RunE: func(*cobra.Command, []string) error {
			if err := bench.WriteReport(in); err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, "report:", filepath.Join(in, bench.ReportFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "results directory")
	_ = cmd.MarkFlagRequired("in")
	return cmd
}

// defaultBenchDir is outside the source tree: a fresh clone measures its
// own machine instead of resuming from the committed results.
func defaultBenchDir(preset string) string {
	cache := os.Getenv("MS2M_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "ms2m")
	}
	return filepath.Join(cache, "bench", preset)
}

// commit names the measured source: a dirty tree is said so.
func commit(repo string) string {
	if repo == "" {
		repo, _ = lab.RepoRoot()
	}
	head, err := exec.Command("git", "-C", repo, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(head))
	if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}
