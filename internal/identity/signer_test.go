package identity_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/certificate"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ms2m/ms2m/internal/identity"
	"github.com/ms2m/ms2m/internal/testenv"
)

// The signer runs against a real API server, which authenticates each
// agent by a ServiceAccount token bound to a pod and records the pod's node
// in the request: that record, not anything the agent says, decides the
// node its certificate is for.

const ns = "ms2m-system"

var (
	admin *rest.Config
	k8s   client.Client
	ca    *identity.CA
)

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithAPIServer(m, func(_ *envtest.Environment, cfg *rest.Config) (err error) {
		admin = cfg
		if k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()}); err != nil {
			return err
		}
		ctx := context.Background()
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
		if ca, err = identity.EnsureCA(ctx, k8s, ns, "ms2m-ca"); err != nil {
			return err
		}
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: testenv.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}})
		if err != nil {
			return err
		}
		// Certificates of 30 s, so that a test sees one renewed.
		s := &identity.Signer{Client: mgr.GetClient(), CA: ca, AgentServiceAccount: "system:serviceaccount:" + ns + ":ms2m-agent",
			MaxLifetime: 30 * time.Second}
		if err := s.SetupWithManager(mgr); err != nil {
			return err
		}
		go func() { _ = mgr.Start(context.Background()) }()
		return nil
	}))
}

// podToken is a token of ServiceAccount sa bound to a pod of it on node,
// as the kubelet mounts one into the agent's pod.
func podToken(t *testing.T, sa, pod, node string) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	for _, o := range []client.Object{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "csr-" + sa}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{"certificates.k8s.io"},
			Resources: []string{"certificatesigningrequests"}, Verbs: []string{"create", "get", "list", "watch"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "csr-" + sa},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "csr-" + sa},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}}},
	} {
		if err := k8s.Create(ctx, o); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod}, Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa,
		Containers: []corev1.Container{{Name: "agent", Image: "ms2m-agent"}}}}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(admin)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: p.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = tr.Status.Token
	return kubernetes.NewForConfigOrDie(cfg)
}

// startCertificates runs the agent's certificate manager for node, as the
// agent does, with cs's credentials, until the test ends.
func startCertificates(t *testing.T, cs kubernetes.Interface, node string) certificate.Manager {
	t.Helper()
	m, err := identity.AgentCertificates(cs, node)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

func TestAgentGetsACertificateForItsOwnNode(t *testing.T) {
	testenv.NeedsServices(t)
	cs := podToken(t, "ms2m-agent", "agent-a", "node-a")
	m := startCertificates(t, cs, "node-a")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := identity.WaitForCertificate(ctx, m); err != nil {
		t.Fatal(err)
	}
	leaf := m.Current().Leaf
	if leaf.Subject.CommonName != identity.AgentName("node-a") || !slices.Equal(leaf.DNSNames, []string{identity.AgentDNSName("node-a")}) {
		t.Errorf("certificate for %q %v", leaf.Subject.CommonName, leaf.DNSNames)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: identity.AgentDNSName("node-a"),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not a node-a agent certificate of the CA: %v", err)
	}
	if life := leaf.NotAfter.Sub(time.Now()); life > identity.DefaultAgentLifetime+time.Minute {
		t.Errorf("lives %s", life)
	}
}

// An agent's certificate is renewed before it expires, through the same
// CSR API and for the same node, by client-go's certificate manager (at
// 70-90 % of its lifetime; here the signer issues 30 s certificates).
func TestAgentCertificateIsRenewedBeforeItExpires(t *testing.T) {
	testenv.NeedsServices(t)
	cs := podToken(t, "ms2m-agent", "agent-r", "node-r")
	m := startCertificates(t, cs, "node-r")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := identity.WaitForCertificate(ctx, m); err != nil {
		t.Fatal(err)
	}
	first := m.Current().Leaf
	if life := first.NotAfter.Sub(first.NotBefore); life > time.Minute {
		t.Fatalf("the signer issues 30 s certificates, this one lasts %s", life)
	}
	var next *x509.Certificate
	for next == nil {
		select {
		case <-ctx.Done():
			t.Fatalf("the certificate expiring at %s was not renewed", first.NotAfter.Format(time.TimeOnly))
		case <-time.After(250 * time.Millisecond):
		}
		if c := m.Current(); c != nil && c.Leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			next = c.Leaf
		}
	}
	if renewedAt := time.Now(); !renewedAt.Before(first.NotAfter) {
		t.Errorf("renewed at %s, after the old one expired at %s", renewedAt.Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))
	}
	if _, err := next.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: identity.AgentDNSName("node-r"),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the renewed certificate is not node-r's agent's: %v", err)
	}
}

// denied waits for a request for commonName to be decided, fails the test
// if it was issued, and returns the denial's message.
func denied(t *testing.T, commonName string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		list := &certv1.CertificateSigningRequestList{}
		if err := k8s.List(context.Background(), list); err != nil {
			t.Fatal(err)
		}
		for _, csr := range list.Items {
			if csr.Spec.SignerName != identity.SignerName || requestedName(t, csr.Spec.Request) != commonName {
				continue
			}
			if len(csr.Status.Certificate) > 0 {
				t.Fatalf("%s was issued to %s", commonName, csr.Spec.Username)
			}
			for _, c := range csr.Status.Conditions {
				if c.Type == certv1.CertificateDenied {
					return c.Message
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no decided request for %s", commonName)
	return ""
}

func requestedName(t *testing.T, request []byte) string {
	t.Helper()
	block, _ := pem.Decode(request)
	if block == nil {
		t.Fatal("a CSR without a PEM request")
	}
	r, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return r.Subject.CommonName
}

func TestAgentCannotGetAnotherNodesCertificate(t *testing.T) {
	testenv.NeedsServices(t)
	cs := podToken(t, "ms2m-agent", "agent-c", "node-c")
	m := startCertificates(t, cs, "node-d")
	msg := denied(t, identity.AgentName("node-d"))
	if !strings.Contains(msg, "the agent on node node-c") || !strings.Contains(msg, `"ms2m-agent:node-c" only`) {
		t.Errorf("denial says %q", msg)
	}
	if m.Current() != nil {
		t.Error("the agent on node-c holds a certificate for node-d")
	}
}

func TestOnlyTheAgentsServiceAccountGetsAgentCertificates(t *testing.T) {
	testenv.NeedsServices(t)
	cs := podToken(t, "intruder", "intruder-e", "node-e")
	startCertificates(t, cs, "node-e")
	msg := denied(t, identity.AgentName("node-e"))
	if !strings.Contains(msg, "system:serviceaccount:"+ns+":intruder") || !strings.Contains(msg, "only the ms2m agents' ServiceAccount") {
		t.Errorf("denial says %q", msg)
	}
}
