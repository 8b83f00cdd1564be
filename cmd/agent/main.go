// Command agent is the ms2m node agent, run by a DaemonSet on every node
// that takes part in migrations.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/agent"
	"github.com/ms2m/ms2m/internal/agentclient"
	"github.com/ms2m/ms2m/internal/engine"
	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/staging"
)

func main() {
	var (
		node, listen, stateDir, caDir, hostRoot, containerdSock, criuConfig, namespace string
		stagingDir, handlerName, handlerBinary                                         string
		runcBinary, runcRoot, criuBinary, dumpDir, archiveDir                          string
	)
	flag.StringVar(&node, "node", os.Getenv("NODE_NAME"), "name of this node")
	flag.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the agents (to find peers)")
	flag.StringVar(&listen, "listen", ":9443", "address of the agent API (mutual TLS)")
	flag.StringVar(&stateDir, "state-dir", "/var/lib/ms2m/agent/{node}", "where operations and received checkpoints are kept, on the host: they outlive the agent's container ({node} is replaced by the node name)")
	flag.StringVar(&caDir, "ca-dir", "/etc/ms2m/ca", "the mounted ConfigMap with the CA certificate of the manager and the agents")
	flag.StringVar(&hostRoot, "host-root", "/host", "where the host's root filesystem is mounted")
	flag.StringVar(&containerdSock, "containerd-socket", "/run/containerd/containerd.sock", "containerd's socket on the host ({node} is replaced by the node name); empty: Direct transfers cannot be received")
	flag.StringVar(&criuConfig, "criu-config", "/etc/criu/runc.conf", "runc's CRIU configuration on the host")
	flag.StringVar(&stagingDir, "staging-dir", "/var/lib/ms2m/staging/{node}", "where checkpoints are staged for ms2m's runtime handler, on the host (the handler's configuration names the same directory); empty: none")
	flag.StringVar(&handlerName, "runtime-handler", "", "runtime handler name of ms2m's runtime on this node (the RuntimeClass's handler), set by the node setup that installed it; empty: not installed")
	flag.StringVar(&handlerBinary, "runtime-handler-binary", "/usr/local/bin/ms2m-runtime", "where the node setup installed ms2m's runtime, on the host ({node} is replaced by the node name)")
	aliases := map[string]string{}
	flag.StringVar(&runcBinary, "runc", "", "the container runtime's runc on the host, which the agent runs itself to dump containers ({node} is replaced by the node name); empty: the one ms2m's runtime handler names, else the first runc in the host's sbin/bin directories")
	flag.StringVar(&runcRoot, "runc-root", "/run/containerd/runc/k8s.io", "runc's state root for the runtime's Kubernetes containers, on the host ({node} is replaced by the node name)")
	flag.StringVar(&criuBinary, "criu", "", "criu on the host for runc to use ({node} is replaced by the node name); empty: runc finds it on the host's PATH")
	flag.StringVar(&dumpDir, "dump-dir", "/run/ms2m/dumps/{node}", "where CRIU writes the images of the dumps the agent takes with runc while the source is frozen, on the host: on tmpfs (/run on systemd hosts) the freeze is a memory copy")
	flag.StringVar(&archiveDir, "archive-dir", "/var/lib/ms2m/dumps/{node}", "where the agent writes checkpoint archives once the source runs again, on the host (disk: not a second copy of the memory in RAM)")
	flag.Func("registry-alias", "REGISTRY=ADDRESS: push images for REGISTRY (as the nodes' runtimes name it) to ADDRESS (repeatable)", func(v string) error {
		from, to, ok := strings.Cut(v, "=")
		if !ok || from == "" || to == "" {
			return fmt.Errorf("want REGISTRY=ADDRESS, got %q", v)
		}
		aliases[from] = to
		return nil
	})
	var plainHTTP []string
	flag.Func("plain-http-registry", "ADDRESS (host:port, as the agent reaches it): a registry the agent may use without TLS (repeatable); every other is reached over HTTPS only", func(v string) error {
		plainHTTP = append(plainHTTP, v)
		return nil
	})
	var kubeletViaProxy, useKubelet bool
	flag.BoolVar(&useKubelet, "kubelet-engine", false, "dump through the kubelet's checkpoint API too, where the runc engine cannot or a target restores checkpoint images (needs create nodes/checkpoint, which RBAC can only grant for every node: config/kubelet-engine, chart value agent.kubeletEngine)")
	var kubeletCA string
	flag.BoolVar(&kubeletViaProxy, "kubelet-via-proxy", false, "reach the kubelet's checkpoint API through the API server's proxy (needs nodes/proxy, which opens every kubelet's whole API to the agents: only for clusters where agents cannot reach their kubelet)")
	flag.StringVar(&kubeletCA, "kubelet-ca", "", "CA bundle of the kubelets' serving certificates (default: the cluster CA the ServiceAccount mounts)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("node", node)
	if node == "" || namespace == "" {
		log.Error("--node and --namespace (or NODE_NAME and POD_NAMESPACE) are required")
		os.Exit(2)
	}
	host := func(p string) string { return filepath.Join(hostRoot, strings.ReplaceAll(p, "{node}", node)) }

	cfg, err := rest.InClusterConfig()
	if err != nil {
		log.Error("in-cluster config", "error", err)
		os.Exit(1)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error("clientset", "error", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	reader, err := peerReader(cfg, scheme, namespace, log)
	if err != nil {
		log.Error("client", "error", err)
		os.Exit(1)
	}
	// The agent's own certificate, for its node only, through the CSR API;
	// rotated by client-go's certificate manager, as the kubelet's is.
	certs, err := identity.AgentCertificates(cs, node)
	if err != nil {
		log.Error("certificate manager", "error", err)
		os.Exit(1)
	}
	certs.Start()
	defer certs.Stop()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = identity.WaitForCertificate(wctx, certs)
	wcancel()
	if err != nil {
		log.Error("agent certificate", "error", err)
		os.Exit(1)
	}
	trust, err := identity.LoadPool(filepath.Join(caDir, identity.CAFile))
	if err != nil {
		log.Error("the CA of the manager and the agents", "dir", caDir, "error", err)
		os.Exit(1)
	}
	tlsCfg := identity.AgentTLS(certs, trust)
	ac := agent.Config{
		Node: node, StateDir: host(stateDir), Log: log, CRIUConfig: host(criuConfig),
		KubeletReason: "not enabled for this install (agent flag --kubelet-engine; config/kubelet-engine or chart value agent.kubeletEngine)",
		Peers:         agentclient.New(agentclient.PodResolver{Reader: reader, Namespace: namespace}, tlsCfg),
		// Registry credentials come from a mounted docker config, if any.
		Registry: agent.Registry{Options: []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}, Aliases: aliases, PlainHTTP: plainHTTP},
		// Checkpoints this node sends are sealed with its certificate; it
		// stages only what the CA's agent of the source node sealed.
		Identity: certs.Current, Trust: trust,
	}
	if useKubelet {
		ac.Kubelet, ac.KubeletReason = kubeletEngine(cfg, cs, node, hostRoot, kubeletViaProxy, kubeletCA, log), "the kubelet's checkpoint API (agent flag --kubelet-engine)"
	}
	if containerdSock != "" {
		ctrd := agent.Containerd{Address: host(containerdSock)}
		ac.Runtime, ac.RuntimeVersion = ctrd, ctrd.Version
	}
	ac.Runc, ac.RuncReason = runcEngine(hostRoot, node, runcBinary, runcRoot, criuBinary, dumpDir, archiveDir, handlerName, handlerBinary)
	ac.LazyPages = engine.Capability{Reason: "no runc engine on the node: " + ac.RuncReason}
	ac.DirtyTracking, ac.FreezeHook = ac.LazyPages, ac.LazyPages
	if r, ok := ac.Runc.(engine.Runc); ok {
		ac.FreezeHook = engine.FindFreezeHook(hostRoot, criuConfig)
		r.FreezeHook = ac.FreezeHook.OK
		ac.Runc = r
		log.Info("freeze hook", "installed", ac.FreezeHook.OK, "why", ac.FreezeHook.Reason)
		pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ac.LazyPages, ac.DirtyTracking = r.MemoryCapabilities(pctx)
		cancel()
		log.Info("memory techniques", "postCopy", ac.LazyPages.OK, "why", ac.LazyPages.Reason, "preCopy", ac.DirtyTracking.OK, "whyNot", ac.DirtyTracking.Reason)
	}
	if stagingDir != "" {
		ac.Staging = &staging.Layout{Dir: host(stagingDir)}
	}
	if handlerName != "" {
		ac.RuntimeHandler = agent.RuntimeHandler{Name: handlerName, Binary: host(handlerBinary)}
	}
	srv, err := agent.NewServer(ac)
	if err != nil {
		log.Error("agent state", "error", err)
		os.Exit(1)
	}
	hs := &http.Server{Addr: listen, Handler: srv.Handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	go srv.ReportNodeCondition(ctx, cs, time.Minute)
	log.Info("serving", "listen", listen, "report", srv.Report(ctx))
	if err := hs.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serving", "error", err)
		os.Exit(1)
	}
}

// kubeletEngine reaches this node's kubelet directly, at the address and
// port its Node reports, as the agent's ServiceAccount (authorised as
// create nodes/checkpoint); or through the API server's proxy when asked.
func kubeletEngine(cfg *rest.Config, cs kubernetes.Interface, node, hostRoot string, viaProxy bool, caFile string, log *slog.Logger) engine.Kubelet {
	k := engine.Kubelet{REST: cs.CoreV1().RESTClient(), Node: node, HostRoot: hostRoot}
	if viaProxy {
		return k
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		log.Error("the kubelet engine: reading this node", "error", err)
		return k
	}
	addr := ""
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			addr = a.Address
			break
		}
	}
	port := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	if caFile == "" {
		caFile = cfg.CAFile
	}
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(caFile); err != nil || !pool.AppendCertsFromPEM(pem) {
		log.Error("the kubelet engine: no CA for the kubelet's certificate", "file", caFile, "error", err)
		return k
	}
	if addr == "" || port == 0 {
		log.Error("the kubelet engine: the node reports no internal address or kubelet port")
		return k
	}
	k.URL = "https://" + net.JoinHostPort(addr, strconv.Itoa(int(port)))
	k.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}}
	tokenFile := cfg.BearerTokenFile
	k.Token = func() (string, error) {
		b, err := os.ReadFile(tokenFile)
		return strings.TrimSpace(string(b)), err
	}
	return k
}

// peerReader reads the agent pods of namespace, through which an agent
// finds the agent of another node: from a watch, so that a Direct
// transfer or a page stream does not wait on a list from the API server
// first (tens of milliseconds, in the path of every migration). A watch
// that cannot start in time leaves the agent listing directly, as before.
func peerReader(cfg *rest.Config, scheme *runtime.Scheme, namespace string, log *slog.Logger) (client.Reader, error) {
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	agents := labels.SelectorFromSet(labels.Set{agentclient.AgentLabel: agentclient.AgentLabelValue})
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{namespace: {}},
		ByObject: map[client.Object]cache.ByObject{&corev1.Pod{}: {Label: agents}}})
	if err != nil {
		log.Warn("watching peer agents; listing them on each transfer instead", "error", err)
		return direct, nil
	}
	go func() {
		if err := c.Start(context.Background()); err != nil {
			log.Warn("watch of peer agents ended", "error", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !c.WaitForCacheSync(ctx) {
		log.Warn("watch of peer agents not synced in 30s; listing them on each transfer instead")
		return direct, nil
	}
	return c, nil
}
