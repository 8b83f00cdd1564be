package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/certificate"
)

// AgentCertificates is node's agent's certificate manager: client-go's, the
// kubelet's own, which requests a certificate through the CSR API (signer
// SignerName, for AgentName(node) and AgentDNSName(node)) and requests a
// new one well before it expires. The key never leaves the agent's memory.
func AgentCertificates(cs kubernetes.Interface, node string) (certificate.Manager, error) {
	lifetime := DefaultAgentLifetime
	return certificate.NewManager(&certificate.Config{
		ClientsetFn: func(*tls.Certificate) (kubernetes.Interface, error) { return cs, nil },
		Template: &x509.CertificateRequest{Subject: pkix.Name{CommonName: AgentName(node)},
			DNSNames: []string{AgentDNSName(node)}},
		SignerName:                   SignerName,
		RequestedCertificateLifetime: &lifetime,
		Usages:                       []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth, certv1.UsageClientAuth},
		CertificateStore:             &memoryStore{},
		Name:                         "ms2m-agent",
	})
}

// WaitForCertificate waits until m holds a certificate.
func WaitForCertificate(ctx context.Context, m certificate.Manager) error {
	for m.Current() == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no certificate from the CSR API (signer %s): is the ms2m manager running? %w", SignerName, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// AgentTLS serves and dials with the agent's current certificate, trusts
// pool only, and demands a client certificate from it. Callers
// set ServerName to the AgentDNSName of the node they call.
func AgentTLS(m certificate.Manager, pool *x509.CertPool) *tls.Config {
	return PeerTLS(pool, func() (*tls.Certificate, error) {
		if c := m.Current(); c != nil {
			return c, nil
		}
		return nil, errors.New("the agent has no certificate yet")
	})
}

// LoadPool reads the CA bundle the agents trust.
func LoadPool(caFile string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	return pool, nil
}

// PeerTLS serves and dials with the certificate current returns, trusting
// pool only and demanding a client certificate from it.
func PeerTLS(pool *x509.CertPool, current func() (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              pool,
		ClientCAs:            pool,
		ClientAuth:           tls.RequireAndVerifyClientCert,
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current() },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return current() },
	}
}

// memoryStore keeps the agent's key and certificate in memory only: an
// agent that restarts asks for a new one.
type memoryStore struct {
	mu  sync.Mutex
	cur *tls.Certificate
}

func (s *memoryStore) Current() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		e := certificate.NoCertKeyError("no certificate yet")
		return nil, &e
	}
	return s.cur, nil
}

func (s *memoryStore) Update(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = &c
	return s.cur, nil
}
