// Package testenv tells tests where the real services they need are. A test
// that needs a service skips under -short (make test-fast) and fails,
// never skips, when the service is missing in a full run: a missing broker
// or API server must not turn a red suite green.
package testenv

import (
	"os"
	"testing"
)

// AMQPURL is the test RabbitMQ's AMQP URL (MS2M_AMQP_URL, set by
// hack/with-rabbitmq.sh).
func AMQPURL(t testing.TB) string { return require(t, "MS2M_AMQP_URL", "hack/with-rabbitmq.sh") }

// RabbitMQManagementURL is the test RabbitMQ's management API
// (MS2M_RABBITMQ_MGMT_URL).
func RabbitMQManagementURL(t testing.TB) string {
	return require(t, "MS2M_RABBITMQ_MGMT_URL", "hack/with-rabbitmq.sh")
}

// KubeAssets is the directory with kube-apiserver and etcd for envtest
// (KUBEBUILDER_ASSETS, from hack/kube-binaries.sh).
func KubeAssets(t testing.TB) string {
	return require(t, "KUBEBUILDER_ASSETS", "hack/kube-binaries.sh")
}

// NeedsServices skips a test under -short: it talks to real services.
func NeedsServices(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs real services; skipped by -short (make test-fast)")
	}
}

func require(t testing.TB, env, how string) string {
	t.Helper()
	NeedsServices(t)
	v := os.Getenv(env)
	if v == "" {
		t.Fatalf("%s is not set: run the tests through `make test` (it starts the services with %s)", env, how)
	}
	return v
}

// Helm is the helm binary the chart's tests run ($MS2M_HELM, which `make
// test` sets from hack/helm.sh).
func Helm(t testing.TB) string {
	return require(t, "MS2M_HELM", "hack/helm.sh")
}

// ShortFlag reports -short from TestMain, before testing.Short may be
// called.
func ShortFlag() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}
