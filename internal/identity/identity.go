// Package identity gives the manager and each node agent an identity of
// its own, and says who is calling: the manager holds a client certificate
// for "ms2m-manager"; each agent requests, through the Kubernetes CSR API,
// a certificate for its own node only, which the manager signs after the
// API server has vouched that the requester is the agent's ServiceAccount
// running on that node. A stolen agent key is then one node's, not every
// agent's and the manager's, and an agent obeys only the manager.
package identity

import (
	"net/http"
	"strings"
)

const (
	// ManagerName is the manager's certificate's common name.
	ManagerName = "ms2m-manager"
	// SignerName is the signer of agents' CertificateSigningRequests.
	SignerName = "ms2m.io/agent"
	// agentPrefix begins an agent's common name: "ms2m-agent:<node>".
	agentPrefix = "ms2m-agent:"
	// dnsSuffix ends the DNS name an agent serves as: its node's name,
	// then this. Callers check the agent they reach is the node's.
	dnsSuffix = ".agent.ms2m.io"
	// CAFile is the CA bundle's key in the agents' ConfigMap and the
	// manager's Secret; CAKeyFile is the CA key's, in the Secret only.
	CAFile    = "ca.crt"
	CAKeyFile = "ca.key"
)

// AgentName is the common name of node's agent.
func AgentName(node string) string { return agentPrefix + node }

// AgentDNSName is the name node's agent serves as, and the one a caller
// verifies.
func AgentDNSName(node string) string { return node + dnsSuffix }

// AgentNode is the node of an agent's common name.
func AgentNode(commonName string) (string, bool) {
	node, ok := strings.CutPrefix(commonName, agentPrefix)
	return node, ok && node != ""
}

// Peer is the verified common name of a request's client certificate, ""
// without one.
func Peer(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName
}
