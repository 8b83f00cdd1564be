package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// A checkpoint is sealed by the agent that took it: its signature, with
// its node's certificate, over the checkpoint's ID and the archive's
// digest. The agent that restores it checks the seal against the CA and
// the node the manager says the checkpoint comes from, and the digest
// against what it unpacked, before the runtime may restore anything: a
// forged or altered checkpoint (a registry's, a stolen key's of another
// node) is never restored.

func sealed(id, digest string) []byte { return []byte("ms2m checkpoint v1\n" + id + "\n" + digest) }

// DigestFile is the sha256 digest of a file, as a Seal names it.
func DigestFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return Digest(h), nil
}

// Digest formats a sha256 hash as a Seal names it.
func Digest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// Seal signs checkpoint id's archive digest with cert.
func Seal(cert *tls.Certificate, id, digest string) (*agentapi.Seal, error) {
	if cert == nil || cert.Leaf == nil {
		return nil, errors.New("no certificate to seal the checkpoint with")
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the certificate's key cannot sign")
	}
	sum := sha256.Sum256(sealed(id, digest))
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &agentapi.Seal{ArchiveDigest: digest, Signature: sig,
		Signer: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw})}, nil
}

// CheckSeal verifies that s was made by the agent of sourceNode, with a
// certificate of the CA in roots, for checkpoint id. The archive's digest
// is checked by the caller against s.ArchiveDigest.
func CheckSeal(s *agentapi.Seal, roots *x509.CertPool, id, sourceNode string) error {
	if s == nil {
		return fmt.Errorf("checkpoint %s carries no seal of its source agent", id)
	}
	block, _ := pem.Decode(s.Signer)
	if block == nil {
		return fmt.Errorf("checkpoint %s: the seal's certificate is not PEM", id)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("checkpoint %s: the seal's certificate: %w", id, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("checkpoint %s was sealed with a certificate ms2m's CA did not issue: %w", id, err)
	}
	if cert.Subject.CommonName != AgentName(sourceNode) {
		return fmt.Errorf("checkpoint %s was sealed by %q, not by the agent of its source node %s", id, cert.Subject.CommonName, sourceNode)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("checkpoint %s: the seal's key is not ECDSA", id)
	}
	sum := sha256.Sum256(sealed(id, s.ArchiveDigest))
	if !ecdsa.VerifyASN1(pub, sum[:], s.Signature) {
		return fmt.Errorf("checkpoint %s: the seal's signature does not match (altered in transit or forged)", id)
	}
	return nil
}
