// Command manager runs the ms2m controller: it reconciles
// StatefulMigrations, talking to the node agents and the brokers.
package main

import (
	"crypto/tls"
	"flag"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/broker/rabbitmq"
	"github.com/ms2m/ms2m/internal/controller"
	"github.com/ms2m/ms2m/internal/evacuation"
	"github.com/ms2m/ms2m/internal/identity"
)

func main() {
	var (
		metricsAddr, probeAddr, namespace, caName, agentSA string
		checkpointKeyName                                  string
		leaderElect                                        bool
		opts                                               controller.Options
		webhookPort                                        int
		webhookService, webhookConfig                      string
		serving                                            func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (0 disables it)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect one active manager among replicas")
	flag.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the manager, the agents and their TLS Secret")
	flag.StringVar(&caName, "ca", "ms2m-ca", "Secret (CA certificate and key, the manager's only) and ConfigMap (CA certificate, for the agents) of the CA that signs the manager's and the agents' certificates; created if missing")
	flag.StringVar(&checkpointKeyName, "checkpoint-key", "ms2m-checkpoint-key", "Secret in --namespace, the manager's only, holding the secret each checkpoint's encryption key is derived from; created if missing")
	flag.StringVar(&agentSA, "agent-service-account", "ms2m-agent", "the agents' ServiceAccount in --namespace: only its pods get agent certificates, each for its own node")
	flag.StringVar(&opts.DefaultCheckpointRepository, "default-checkpoint-repository", "", "repository for Registry transfers that name none")
	flag.IntVar(&opts.MaxConcurrentReconciles, "max-concurrent-migrations", 4, "migrations reconciled in parallel")
	flag.DurationVar(&opts.BrokerRetryWindow, "broker-retry-window", 30*time.Second, "how long a new migration waits for an unreachable broker before failing")
	flag.StringVar(&opts.RuntimeClass, "runtime-class", "ms2m", "RuntimeClass of ms2m's runtime handler: targets on nodes that have the handler restore through it")
	flag.DurationVar(&opts.SourceStopGrace, "source-stop-grace", time.Second, "termination grace of a source the migration no longer needs (its Services already have the target; whole seconds): not the pod's own, which a workload ignoring SIGTERM would spend in full")
	flag.Int64Var(&opts.AssumedPrefetch, "assumed-prefetch", 50, "the most messages a source may hold unapplied, assumed only for a broker whose management API cannot describe its consumers")
	flag.Func("allowed-registries", "comma-separated registry hosts (host or host:port) checkpoints may be pushed to besides the default repository's; a checkpoint is a pod's whole memory", listFlag(&opts.AllowedRegistries))
	flag.Func("allowed-broker-hosts", "comma-separated broker hosts (host or host:port, AMQP and management API) migrations may connect to; empty allows any", listFlag(&opts.AllowedBrokerHosts))
	flag.BoolVar(&opts.ExplicitTargetOverridesScheduling, "explicit-target-overrides-scheduling", false, "let spec.targetNode name a cordoned node, one tainted against the pod or one outside its nodeSelector")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "port of the eviction webhook (0 serves none)")
	flag.StringVar(&webhookService, "webhook-service", "ms2m-webhook", "Service in --namespace through which the API server calls the eviction webhook (the serving certificate names it)")
	flag.StringVar(&webhookConfig, "eviction-webhook-configuration", "ms2m-evictions", "ValidatingWebhookConfiguration whose caBundle the manager sets to its CA")
	flag.DurationVar(&opts.FailForwardAfter, "fail-forward-after", 2*time.Minute, "how long past its deadline a migration past the point of no return keeps going before it fails forward, the target kept")
	flag.DurationVar(&opts.NodeLostGrace, "node-lost-grace", 40*time.Second, "how long a node must have been not Ready before a rollback force-deletes the target pod it holds (its kubelet would never confirm the deletion)")
	var agentOpWait time.Duration
	flag.DurationVar(&agentOpWait, "agent-op-wait", 500*time.Millisecond, "how long an agent may hold its answer to a checkpoint, transfer or stage request while the operation runs (at most 2s), so that the migration moves on the moment it ends; 0 polls")
	flag.DurationVar(&opts.DeletionDeadline, "deletion-deadline", 2*time.Minute, "how long the cleanup of a deleted StatefulMigration may take (an unreachable broker or node); then its finalizer is removed and a CleanupAbandoned Event says what may be left")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("setup")
	if namespace == "" {
		log.Error(nil, "--namespace (or POD_NAMESPACE) is required")
		os.Exit(2)
	}

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	var hooks webhook.Server
	if webhookPort != 0 {
		// The certificate comes from the CA, read once the manager has a
		// client: GetCertificate asks for it at each handshake.
		hooks = webhook.NewServer(webhook.Options{Port: webhookPort, TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) { return serving(hello) }
		}}})
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		WebhookServer:          hooks,
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "ms2m-manager.migration.ms2m.io",
	})
	if err != nil {
		log.Error(err, "creating the manager")
		os.Exit(1)
	}
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: scheme})
	if err != nil {
		log.Error(err, "creating a client")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	ca, err := identity.EnsureCA(ctx, direct, namespace, caName)
	if err != nil {
		log.Error(err, "the CA of the manager and the agents", "namespace", namespace, "name", caName)
		os.Exit(1)
	}
	if opts.CheckpointSecret, err = identity.EnsureCheckpointSecret(ctx, direct, namespace, checkpointKeyName); err != nil {
		log.Error(err, "the checkpoint key secret", "namespace", namespace, "name", checkpointKeyName)
		os.Exit(1)
	}
	signer := &identity.Signer{Client: mgr.GetClient(), CA: ca, AgentServiceAccount: "system:serviceaccount:" + namespace + ":" + agentSA}
	if err := signer.SetupWithManager(mgr); err != nil {
		log.Error(err, "setting up the agent certificate signer")
		os.Exit(1)
	}
	agents := agentclient.New(agentclient.PodResolver{Reader: mgr.GetClient(), Namespace: namespace}, identity.ManagerTLS(ca))
	agents.OpWait = agentOpWait
	r := &controller.Reconciler{Client: mgr.GetClient(), Scheme: scheme, Recorder: mgr.GetEventRecorder("ms2m-manager"),
		Agents: agents, DialBroker: rabbitmq.Dial, Options: opts}
	if err := r.SetupWithManager(mgr); err != nil {
		log.Error(err, "setting up the controller")
		os.Exit(1)
	}
	if hooks != nil {
		svc := webhookService + "." + namespace + ".svc"
		serving = ca.ServingCertificate([]string{svc, svc + ".cluster.local", webhookService + "." + namespace})
		// Through the manager: it runs the webhook server only once asked for it.
		mgr.GetWebhookServer().Register(evacuation.Path, &webhook.Admission{Handler: &evacuation.Webhook{Reader: mgr.GetAPIReader(), Client: mgr.GetClient(),
			Recorder: mgr.GetEventRecorder("ms2m-evictions")}})
		if err := evacuation.TrustCA(ctx, direct, webhookConfig, ca.PEM); err != nil {
			// Without it the API server cannot call the webhook, and
			// (failurePolicy Ignore) evictions go on as if ms2m were not
			// installed: said, not fatal.
			log.Error(err, "the eviction webhook will not be called: evictions do not migrate")
		}
	}
	_ = mgr.AddHealthzCheck("healthz", healthz.Ping)
	_ = mgr.AddReadyzCheck("readyz", healthz.Ping)
	log.Info("starting", "namespace", namespace)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

// listFlag appends a flag's comma-separated values to dst.
func listFlag(dst *[]string) func(string) error {
	return func(v string) error {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				*dst = append(*dst, e)
			}
		}
		return nil
	}
}
