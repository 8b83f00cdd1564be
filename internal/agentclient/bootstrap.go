package agentclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/lab/pki"
)

// EnsureSecret makes sure the agents' TLS Secret exists: a private CA and
// one certificate it signs, for the name ServerName, used by the agents
// (serving, and dialling each other) and by the controller. Whoever can read
// the Secret can command the agents, so it lives in ms2m's own namespace.
func EnsureSecret(ctx context.Context, c client.Client, namespace, name string) (*corev1.Secret, error) {
	sec := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec)
	if err == nil {
		return sec, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	ca, err := pki.NewCA("ms2m-agents")
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.Issue(pki.Request{CommonName: ServerName, DNSNames: []string{ServerName}, Server: true, Client: true})
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return nil, err
	}
	sec = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "ms2m"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{CAFile: pki.CertPEM(ca.Cert), CertFile: pki.CertPEM(cert), KeyFile: keyPEM},
	}
	if err := c.Create(ctx, sec); err != nil {
		if apierrors.IsAlreadyExists(err) { // another replica was first
			return sec, c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec)
		}
		return nil, err
	}
	return sec, nil
}

// TLSFromSecret is LoadTLS for credentials read from the API.
func TLSFromSecret(sec *corev1.Secret) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data[CAFile]) {
		return nil, fmt.Errorf("secret %s/%s: no CA in %s", sec.Namespace, sec.Name, CAFile)
	}
	cert, err := tls.X509KeyPair(sec.Data[CertFile], sec.Data[KeyFile])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, ServerName: ServerName}, nil
}
