package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/lab/pki"
)

// CA signs the manager's and the agents' certificates. Its key stays in a
// Secret only the manager reads; the agents get its certificate alone, in
// a ConfigMap.
type CA struct {
	*pki.CA
	// PEM is the CA certificate, as agents and the manager trust it.
	PEM []byte
}

// EnsureCA loads the CA from the Secret name in namespace, creating it on
// the first start, and publishes its certificate in the ConfigMap of the
// same name for the agents.
func EnsureCA(ctx context.Context, c client.Client, namespace, name string) (*CA, error) {
	sec := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec)
	if apierrors.IsNotFound(err) {
		sec, err = newCASecret(namespace, name)
		if err != nil {
			return nil, err
		}
		err = c.Create(ctx, sec)
		if apierrors.IsAlreadyExists(err) { // another replica was first
			err = c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec)
		}
	}
	if err != nil {
		return nil, err
	}
	ca, err := parseCA(sec.Data[CAFile], sec.Data[CAKeyFile])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "ms2m"}},
		Data: map[string]string{CAFile: string(ca.PEM)}}
	if err := c.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	return ca, nil
}

func newCASecret(namespace, name string) (*corev1.Secret, error) {
	ca, err := pki.NewCA("ms2m")
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.KeyPEM(ca.Key)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "ms2m"}},
		Data:       map[string][]byte{CAFile: pki.CertPEM(ca.Cert), CAKeyFile: keyPEM},
	}, nil
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, errors.New("CA: not a CA certificate with a signing key")
	}
	return &CA{CA: &pki.CA{Cert: cert, Key: key}, PEM: certPEM}, nil
}

// NewCA makes a CA in memory (EnsureCA keeps one in the cluster).
func NewCA() (*CA, error) {
	ca, err := pki.NewCA("ms2m")
	if err != nil {
		return nil, err
	}
	return &CA{CA: ca, PEM: pki.CertPEM(ca.Cert)}, nil
}

// AgentCertificate issues node's agent certificate directly, as the
// Signer does for an approved request.
func (ca *CA) AgentCertificate(node string, lifetime time.Duration) (*tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.sign(key.Public(), AgentName(node), []string{AgentDNSName(node)}, lifetime,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	if err != nil {
		return nil, err
	}
	return pairOf(certPEM, key)
}

// Pool is the CA as a trust pool.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// sign issues a certificate for pub.
func (ca *CA) sign(pub crypto.PublicKey, commonName string, dnsNames []string, lifetime time.Duration, usages []x509.ExtKeyUsage) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: commonName},
		// Clock skew between nodes; a tenth of a short lifetime at most, or
		// the renewal, due at 70-90 % of the whole span, would be due at once.
		NotBefore:   now.Add(-min(5*time.Minute, lifetime/10)),
		NotAfter:    now.Add(lifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usages,
		DNSNames:    dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ManagerTLS is the manager's client configuration for agents: a client
// certificate for ManagerName, issued for a day and issued again once two
// thirds of that have passed, so that a key taken from the manager's memory
// expires soon. Callers set ServerName to the AgentDNSName of the node they
// call.
func ManagerTLS(ca *CA) *tls.Config {
	get := ca.rotating(ManagerName, nil, x509.ExtKeyUsageClientAuth)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() }}
}

// ServingCertificate serves the manager's webhooks as dnsNames (the names
// of its Service), with a certificate of the CA issued in memory for a day
// and issued again once two thirds of that have passed; the webhook
// configurations trust the CA (its PEM is their caBundle).
func (ca *CA) ServingCertificate(dnsNames []string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	get := ca.rotating(dnsNames[0], dnsNames, x509.ExtKeyUsageServerAuth)
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return get() }
}

// rotating issues a certificate on first use and again when a third of its
// day is left.
func (ca *CA) rotating(commonName string, dnsNames []string, usage x509.ExtKeyUsage) func() (*tls.Certificate, error) {
	const lifetime = 24 * time.Hour
	var (
		mu      sync.Mutex
		current *tls.Certificate
	)
	return func() (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if current != nil && time.Until(current.Leaf.NotAfter) > lifetime/3 {
			return current, nil
		}
		key, err := newKey()
		if err != nil {
			return nil, err
		}
		certPEM, err := ca.sign(key.Public(), commonName, dnsNames, lifetime, []x509.ExtKeyUsage{usage})
		if err != nil {
			return nil, err
		}
		c, err := pairOf(certPEM, key)
		if err != nil {
			return nil, err
		}
		current = c
		return c, nil
	}
}

func pairOf(certPEM []byte, key crypto.Signer) (*tls.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}, nil
}

func newKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
