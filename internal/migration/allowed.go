package migration

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Destinations is where the cluster admin lets migrations send what they
// carry: the checkpoint (a pod's whole memory) and the broker credentials.
// A tenant who may create a migration would otherwise choose both.
type Destinations struct {
	// Registries are the registry hosts ("host" or "host:port") a
	// checkpoint may be pushed to, besides the default repository's.
	Registries []string
	// DefaultRepository is the manager's default checkpoint repository:
	// its registry is always allowed.
	DefaultRepository string
	// BrokerHosts are the broker hosts ("host" or "host:port") the manager
	// may connect to, the management API's included; empty allows any
	// (the admission policy still makes a migration's creator able to read
	// the credentials it names).
	BrokerHosts []string
}

// CheckRepository refuses a checkpoint repository outside the allowed
// registries, saying what to change.
func (d Destinations) CheckRepository(repository string) string {
	if repository == "" {
		return ""
	}
	host, err := registryOf(repository)
	if err != nil {
		return fmt.Sprintf("checkpointImageRepository %q: %v", repository, err)
	}
	allowed := slices.Clone(d.Registries)
	if d.DefaultRepository != "" {
		if h, err := registryOf(d.DefaultRepository); err == nil {
			allowed = append(allowed, h)
		}
	}
	if slices.Contains(allowed, host) {
		return ""
	}
	return fmt.Sprintf("checkpointImageRepository %q is on registry %s, where the manager does not push checkpoints (a checkpoint is the pod's whole memory); use a repository on %s, or ask a cluster admin to add %s to the manager's --allowed-registries",
		repository, host, orNone(allowed), host)
}

// CheckBroker refuses broker URLs (the AMQP one and the management API's)
// whose host is not allowed.
func (d Destinations) CheckBroker(urls ...string) string {
	if len(d.BrokerHosts) == 0 {
		return ""
	}
	host, raw, bad := BrokerOutside(d.BrokerHosts, urls...)
	switch {
	case bad && host == "":
		return fmt.Sprintf("broker URL %q has no host", raw)
	case bad:
		return fmt.Sprintf("broker host %s (%s) is not one the manager may connect to (%s); ask a cluster admin to add it to the manager's --allowed-broker-hosts",
			host, raw, strings.Join(d.BrokerHosts, ", "))
	}
	return ""
}

// BrokerOutside finds the first of urls whose host is not one of hosts
// ("host" or "host:port"; a URL without a port has its scheme's): it
// returns that host ("" when the URL has none) and the URL with any
// password redacted. Empty URLs are skipped.
func BrokerOutside(hosts []string, urls ...string) (host, redacted string, outside bool) {
	for _, raw := range urls {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			return "", redact(raw), true
		}
		if slices.Contains(hosts, u.Hostname()) || slices.Contains(hosts, u.Host) ||
			(u.Port() == "" && slices.Contains(hosts, net.JoinHostPort(u.Hostname(), defaultPort(u.Scheme)))) {
			continue
		}
		return u.Host, redact(raw), true
	}
	return "", "", false
}

// RegistryOf is the registry host ("host" or "host:port") of a repository.
func RegistryOf(repository string) (string, error) { return registryOf(repository) }

func registryOf(repository string) (string, error) {
	r, err := name.NewRepository(repository)
	if err != nil {
		return "", err
	}
	return r.RegistryStr(), nil
}

func defaultPort(scheme string) string {
	switch scheme {
	case "amqps":
		return "5671"
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return "5672"
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

func orNone(hosts []string) string {
	if len(hosts) == 0 {
		return "no registry (the manager allows none and has no default repository)"
	}
	return strings.Join(hosts, ", ")
}
