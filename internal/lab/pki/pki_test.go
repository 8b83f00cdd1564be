package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// The issued pairs must work for real TLS: a server with the apiserver pair,
// verified against the CA under its host IP, accepting the admin client.
func TestLabPKIServesMutualTLS(t *testing.T) {
	dir := t.TempDir()
	spec := LabSpec{Dir: dir, HostIP: net.ParseIP("192.0.2.9"), APIServer: "https://127.0.0.1:6443", Nodes: []string{"node-a", "node-b"}}
	if spec.Complete() {
		t.Fatal("empty dir reported complete")
	}
	if err := Generate(spec); err != nil {
		t.Fatal(err)
	}
	if !spec.Complete() {
		t.Fatal("generated PKI reported incomplete")
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	srvPair, err := tls.LoadX509KeyPair(filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.TLS.PeerCertificates[0]
		_, _ = io.WriteString(w, c.Subject.CommonName+"/"+strings.Join(c.Subject.Organization, ","))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(cfg.CertData, cfg.KeyData)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cfg.CAData)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "192.0.2.9",
	}}}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ms2m-lab-admin/system:masters" {
		t.Fatalf("server saw client %q", body)
	}

	node, err := tls.LoadX509KeyPair(filepath.Join(dir, "node-b-serving.crt"), filepath.Join(dir, "node-b-serving.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(node.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "node-b"}); err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	kc, _ := os.ReadFile(filepath.Join(dir, "node-a.kubeconfig"))
	c, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	blk := c.AuthInfos["system:node:node-a"].ClientCertificateData
	pc, _ := tls.X509KeyPair(blk, c.AuthInfos["system:node:node-a"].ClientKeyData)
	nc, _ := x509.ParseCertificate(pc.Certificate[0])
	if nc.Subject.CommonName != "system:node:node-a" || nc.Subject.Organization[0] != "system:nodes" {
		t.Fatalf("node identity %v", nc.Subject)
	}
}
