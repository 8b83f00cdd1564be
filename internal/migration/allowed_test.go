package migration

import (
	"strings"
	"testing"
)

func TestCheckRepository(t *testing.T) {
	d := Destinations{DefaultRepository: "registry.lab:5000/ckpt", Registries: []string{"ghcr.io"}}
	for _, tc := range []struct {
		repo string
		says string // "" = allowed
	}{
		{"", ""},
		{"registry.lab:5000/other/team", ""},
		{"ghcr.io/acme/ckpt", ""},
		{"registry.lab/ckpt", "registry registry.lab,"},
		{"attacker.example/loot", "--allowed-registries"},
		{"loot", "index.docker.io"},
	} {
		got := d.CheckRepository(tc.repo)
		if (got == "") != (tc.says == "") || !strings.Contains(got, tc.says) {
			t.Errorf("CheckRepository(%q) = %q, want %q", tc.repo, got, tc.says)
		}
	}
	if got := (Destinations{}).CheckRepository("registry.lab:5000/ckpt"); !strings.Contains(got, "allows none") {
		t.Errorf("with nothing configured every repository is refused, got %q", got)
	}
}

func TestCheckBroker(t *testing.T) {
	if got := (Destinations{}).CheckBroker("amqp://u:p@anywhere/"); got != "" {
		t.Errorf("no broker hosts configured allows any, got %q", got)
	}
	d := Destinations{BrokerHosts: []string{"rabbitmq.mq.svc", "10.0.0.7:5673"}}
	for _, tc := range []struct {
		urls []string
		says string
	}{
		{[]string{"amqp://u:p@rabbitmq.mq.svc:5672/", "http://rabbitmq.mq.svc:15672"}, ""},
		{[]string{"amqp://10.0.0.7:5673/"}, ""},
		{[]string{"amqp://10.0.0.7/"}, "10.0.0.7"},
		{[]string{"amqp://rabbitmq.mq.svc/", "http://monitor.evil:15672"}, "monitor.evil:15672"},
		{[]string{"amqp://alice:s3cret@evil.example/"}, "--allowed-broker-hosts"},
	} {
		got := d.CheckBroker(tc.urls...)
		if (got == "") != (tc.says == "") || !strings.Contains(got, tc.says) {
			t.Errorf("CheckBroker(%v) = %q, want %q", tc.urls, got, tc.says)
		}
		if strings.Contains(got, "s3cret") {
			t.Errorf("the refusal shows the password: %q", got)
		}
	}
}
