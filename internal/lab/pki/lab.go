package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Identity is a client of the API server with its kubeconfig.
type Identity struct {
	Name   string // file stem: NAME.crt, NAME.key, NAME.kubeconfig
	User   string
	Groups []string
}

// LabSpec is what the lab's PKI must cover.
type LabSpec struct {
	Dir       string
	HostIP    net.IP
	APIServer string // URL written into the kubeconfigs
	Nodes     []string
}

// Files of the PKI that the lab components are given.
const (
	CAFile    = "ca.crt"
	SAKey     = "sa.key"
	SAPub     = "sa.pub"
	AdminName = "admin"
)

// Identities lists the API clients of the lab.
func (s LabSpec) Identities() []Identity {
	ids := []Identity{
		{Name: AdminName, User: "ms2m-lab-admin", Groups: []string{"system:masters"}},
		{Name: "kube-controller-manager", User: "system:kube-controller-manager"},
		{Name: "kube-scheduler", User: "system:kube-scheduler"},
	}
	for _, n := range s.Nodes {
		ids = append(ids, Identity{Name: n, User: "system:node:" + n, Groups: []string{"system:nodes"}})
	}
	return ids
}

// Complete reports whether every file of the PKI exists.
func (s LabSpec) Complete() bool {
	files := []string{CAFile, "ca.key", SAKey, SAPub, "apiserver.crt", "apiserver-kubelet-client.crt"}
	for _, id := range s.Identities() {
		files = append(files, id.Name+".kubeconfig")
	}
	for _, n := range s.Nodes {
		files = append(files, n+"-serving.crt")
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(s.Dir, f)); err != nil {
			return false
		}
	}
	return true
}

// Generate writes the lab's whole PKI into s.Dir.
func Generate(s LabSpec) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	ca, err := NewCA("ms2m-lab-ca")
	if err != nil {
		return err
	}
	if err := WritePair(s.Dir, "ca", ca.Cert, ca.Key); err != nil {
		return err
	}
	loop := net.ParseIP("127.0.0.1")
	// 10.0.0.1 is the kubernetes Service's ClusterIP in --service-cluster-ip-range.
	issue := []struct {
		name string
		r    Request
	}{
		{"apiserver", Request{
			CommonName: "kube-apiserver", Server: true,
			IPs:      []net.IP{loop, s.HostIP, net.ParseIP("10.0.0.1")},
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		}},
		{"apiserver-kubelet-client", Request{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}},
	}
	for _, n := range s.Nodes {
		issue = append(issue, struct {
			name string
			r    Request
		}{n + "-serving", Request{CommonName: n, Server: true, IPs: []net.IP{loop, s.HostIP}, DNSNames: []string{n, "localhost"}}})
	}
	for _, i := range issue {
		c, k, err := ca.Issue(i.r)
		if err != nil {
			return fmt.Errorf("%s: %w", i.name, err)
		}
		if err := WritePair(s.Dir, i.name, c, k); err != nil {
			return err
		}
	}
	for _, id := range s.Identities() {
		c, k, err := ca.Issue(Request{CommonName: id.User, Organization: id.Groups, Client: true})
		if err != nil {
			return fmt.Errorf("%s: %w", id.Name, err)
		}
		if err := WritePair(s.Dir, id.Name, c, k); err != nil {
			return err
		}
		kp, err := KeyPEM(k)
		if err != nil {
			return err
		}
		kc := Kubeconfig(s.APIServer, id.User, CertPEM(ca.Cert), CertPEM(c), kp)
		if err := os.WriteFile(filepath.Join(s.Dir, id.Name+".kubeconfig"), kc, 0o600); err != nil {
			return err
		}
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	kp, err := KeyPEM(sa)
	if err != nil {
		return err
	}
	pp, err := PublicKeyPEM(sa.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, SAKey), kp, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, SAPub), pp, 0o644)
}

// Kubeconfig renders a self-contained kubeconfig: it embeds the CA and the
// client pair, so it can be copied anywhere.
func Kubeconfig(server, user string, ca, cert, key []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: ms2m-lab
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: ms2m-lab
  context:
    cluster: ms2m-lab
    user: %s
current-context: ms2m-lab
`, server, b64(ca), user, b64(cert), b64(key), user)
}
