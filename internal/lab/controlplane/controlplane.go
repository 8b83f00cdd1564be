// Package controlplane describes the lab's etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler processes and waits for them.
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// Params of the control plane.
type Params struct {
	Dir          string // etcd data
	PKI          string
	Bin          string // Kubernetes binaries
	HostIP       string
	APIPort      int
	EtcdPort     int
	EtcdPeerPort int
	ServiceCIDR  string
	Logs         string
}

// APIServerURL is the address the host's clients use.
func (p Params) APIServerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", p.APIPort) }

func (p Params) pki(f string) string { return filepath.Join(p.PKI, f) }

func (p Params) spec(name string, args ...string) supervise.Spec {
	return supervise.Spec{Name: name, Path: filepath.Join(p.Bin, name), Args: args, Log: filepath.Join(p.Logs, name+".log"), Dir: p.Dir, Restart: true}
}

// Etcd is etcd's process: loopback only, no fsync (the lab's data is thrown
// away at `down`).
func (p Params) Etcd() supervise.Spec {
	client := fmt.Sprintf("http://127.0.0.1:%d", p.EtcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", p.EtcdPeerPort)
	return p.spec("etcd",
		"--name=ms2m-lab", "--data-dir="+filepath.Join(p.Dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=ms2m-lab="+peer, "--unsafe-no-fsync", "--log-level=warn")
}

// APIServer listens on every address: pods (the node agents) reach it on
// the host IP, host tools on 127.0.0.1.
func (p Params) APIServer() supervise.Spec {
	return p.spec("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:"+strconv.Itoa(p.EtcdPort),
		"--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(p.APIPort),
		"--advertise-address="+p.HostIP,
		"--tls-cert-file="+p.pki("apiserver.crt"), "--tls-private-key-file="+p.pki("apiserver.key"),
		"--client-ca-file="+p.pki("ca.crt"),
		"--kubelet-client-certificate="+p.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+p.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-cluster-ip-range="+p.ServiceCIDR,
		// The lab runs no kube-proxy, so a Service's ClusterIP leads
		// nowhere: the API server reaches webhooks (ms2m's eviction
		// webhook) at their Services' endpoints instead.
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.pki("sa.pub"),
		"--service-account-signing-key-file="+p.pki("sa.key"),
		"--profiling=false")
}

// ControllerManager runs without leader election and without node CIDR
// allocation: each node's CNI config carries its own subnet.
func (p Params) ControllerManager() supervise.Spec {
	kc := p.pki("kube-controller-manager.kubeconfig")
	return p.spec("kube-controller-manager",
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--service-account-private-key-file="+p.pki("sa.key"), "--root-ca-file="+p.pki("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+p.pki("ca.crt"), "--cluster-signing-key-file="+p.pki("ca.key"),
		"--allocate-node-cidrs=false", "--profiling=false")
}

// Scheduler runs without leader election.
func (p Params) Scheduler() supervise.Spec {
	kc := p.pki("kube-scheduler.kubeconfig")
	return p.spec("kube-scheduler",
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false")
}

// HTTPClient trusts the lab CA and presents the admin certificate.
func HTTPClient(pkiDir string) (*http.Client, error) {
	ca, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "admin.crt"), filepath.Join(pkiDir, "admin.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// Probe GETs url and wants 200.
func Probe(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// InsecureHTTP is for the loopback health endpoints of kcm and scheduler,
// whose serving certificates are self-signed by the components.
var InsecureHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health probe of a self-signed endpoint
}}
