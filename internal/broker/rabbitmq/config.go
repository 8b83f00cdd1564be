package rabbitmq

import (
	"net"
	"net/url"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/internal/broker"
)

// config is a stream's connection settings, credentials resolved.
type config struct {
	url  string
	uri  amqp.URI
	mgmt *url.URL
}

func configure(s broker.Stream) (config, error) {
	uri, err := amqp.ParseURI(s.URL)
	if err != nil {
		// the URL may carry a password: say what is wrong, not what it is
		return config{}, broker.InvalidTopology("broker URL is not an AMQP URI (amqp://user@host:port/vhost): %v", err)
	}
	if s.Username != "" {
		uri.Username = s.Username
	}
	if s.Password != "" {
		uri.Password = s.Password
	}
	m, err := managementURL(s.ManagementURL, uri)
	if err != nil {
		return config{}, err
	}
	return config{url: s.URL, uri: uri, mgmt: m}, nil
}

// managementURL is raw, or the management plugin's default listener on
// the AMQP host. It authenticates with the AMQP credentials unless raw
// carries its own (a monitoring user, say).
func managementURL(raw string, uri amqp.URI) (*url.URL, error) {
	if raw == "" {
		scheme, port := "http", "15672"
		if uri.Scheme == "amqps" {
			scheme, port = "https", "15671"
		}
		raw = scheme + "://" + net.JoinHostPort(uri.Host, port)
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, broker.InvalidTopology("management URL %q is not an http(s) URL", redacted(raw))
	}
	if u.User == nil {
		u.User = url.UserPassword(uri.Username, uri.Password)
	}
	return u, nil
}

// redacted hides a password in a URL meant for a message.
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
