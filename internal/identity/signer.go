package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The API server records, in the CSR, the node of the pod a bound
// ServiceAccount token belongs to: the proof of which node asks.
const extraNodeName = "authentication.kubernetes.io/node-name"

// Lifetimes of agent certificates: what a CSR asks for, within bounds.
const (
	DefaultAgentLifetime = 7 * 24 * time.Hour
	minAgentLifetime     = time.Hour
)

// Signer approves and signs agents' CertificateSigningRequests (signer
// ms2m.io/agent), each only for the node the requesting agent runs on, and
// denies every other with the reason.
type Signer struct {
	Client client.Client
	CA     *CA
	// MaxLifetime, when set, shortens every certificate it issues to at
	// most that (the CSR API takes no request under 10 minutes).
	MaxLifetime time.Duration
	// AgentServiceAccount is the agents' ServiceAccount as the API server
	// names its user ("system:serviceaccount:<namespace>:<name>").
	AgentServiceAccount string
}

// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests/approval;certificatesigningrequests/status,verbs=update
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,resourceNames=ms2m.io/agent,verbs=approve;sign

// SetupWithManager watches the CSRs of SignerName only.
func (s *Signer) SetupWithManager(mgr ctrl.Manager) error {
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certv1.CertificateSigningRequest)
		return ok && csr.Spec.SignerName == SignerName
	})
	return ctrl.NewControllerManagedBy(mgr).Named("agent-csr-signer").
		For(&certv1.CertificateSigningRequest{}, builder.WithPredicates(ours)).Complete(s)
}

// Reconcile decides a pending request, then signs an approved one. A
// conflict (the request changed since it was read: the agent's certificate
// manager or the API server wrote it) is no error: that change brings the
// request back.
func (s *Signer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := s.decide(ctx, req)
	if apierrors.IsConflict(err) {
		return reconcile.Result{}, nil
	}
	return res, err
}

func (s *Signer) decide(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	csr := &certv1.CertificateSigningRequest{}
	if err := s.Client.Get(ctx, req.NamespacedName, csr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if csr.Spec.SignerName != SignerName || len(csr.Status.Certificate) > 0 || has(csr, certv1.CertificateDenied) || has(csr, certv1.CertificateFailed) {
		return reconcile.Result{}, nil
	}
	node, parsed, denial := Review(csr, s.AgentServiceAccount)
	if denial != "" {
		csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{Type: certv1.CertificateDenied,
			Status: corev1.ConditionTrue, Reason: "NotAnAgentOfThisNode", Message: denial, LastUpdateTime: metav1.Now()})
		return reconcile.Result{}, s.Client.SubResource("approval").Update(ctx, csr)
	}
	if !has(csr, certv1.CertificateApproved) {
		csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{Type: certv1.CertificateApproved,
			Status: corev1.ConditionTrue, Reason: "AgentOfItsNode", Message: "requested by the ms2m agent running on node " + node + ", for that node", LastUpdateTime: metav1.Now()})
		if err := s.Client.SubResource("approval").Update(ctx, csr); err != nil {
			return reconcile.Result{}, err
		}
	}
	lifetime := DefaultAgentLifetime
	if e := csr.Spec.ExpirationSeconds; e != nil {
		lifetime = min(max(time.Duration(*e)*time.Second, minAgentLifetime), DefaultAgentLifetime)
	}
	if s.MaxLifetime > 0 {
		lifetime = min(lifetime, s.MaxLifetime)
	}
	cert, err := s.CA.sign(parsed.PublicKey, AgentName(node), []string{AgentDNSName(node)}, lifetime,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	if err != nil {
		return reconcile.Result{}, err
	}
	csr.Status.Certificate = cert
	return reconcile.Result{}, s.Client.Status().Update(ctx, csr)
}

func has(csr *certv1.CertificateSigningRequest, t certv1.RequestConditionType) bool {
	return slices.ContainsFunc(csr.Status.Conditions, func(c certv1.CertificateSigningRequestCondition) bool { return c.Type == t })
}

// Review checks an agent's request: made by the agents' ServiceAccount with
// a token bound to a pod on a node, for that node's agent name and DNS name
// only, with a strong key and agent usages. It returns the node, or why
// the request is denied.
func Review(csr *certv1.CertificateSigningRequest, agentServiceAccount string) (string, *x509.CertificateRequest, string) {
	if csr.Spec.Username != agentServiceAccount {
		return "", nil, fmt.Sprintf("requested by %s: only the ms2m agents' ServiceAccount %s may request agent certificates", csr.Spec.Username, agentServiceAccount)
	}
	nodes := csr.Spec.Extra[extraNodeName]
	if len(nodes) != 1 || nodes[0] == "" {
		return "", nil, "the request carries no node: it must be made with the agent pod's own (bound) ServiceAccount token, which names the pod's node"
	}
	node := nodes[0]
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return "", nil, "spec.request is not a PEM certificate request"
	}
	parsed, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = parsed.CheckSignature()
	}
	if err != nil {
		return "", nil, fmt.Sprintf("spec.request: %v", err)
	}
	switch {
	case parsed.Subject.CommonName != AgentName(node):
		return "", nil, fmt.Sprintf("the agent on node %s asked for %q: it may have %q only", node, parsed.Subject.CommonName, AgentName(node))
	case !slices.Equal(parsed.DNSNames, []string{AgentDNSName(node)}) || len(parsed.IPAddresses)+len(parsed.URIs)+len(parsed.EmailAddresses) > 0:
		return "", nil, fmt.Sprintf("the agent on node %s may name only %s, no other name or address", node, AgentDNSName(node))
	}
	switch k := parsed.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return "", nil, "an ECDSA key needs at least 256 bits"
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", nil, "an RSA key needs at least 2048 bits"
		}
	default:
		return "", nil, "only ECDSA and RSA keys are signed"
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains([]certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth, certv1.UsageClientAuth}, u) {
			return "", nil, fmt.Sprintf("usage %q is not one an agent has", u)
		}
	}
	return node, parsed, ""
}
