// Package podstream reads a pod's message stream from its annotations, so
// that `kubectl migrate pod` and a drain that migrates need no broker
// settings of their own.
package podstream

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// Pod annotations that describe a workload's message stream, so that
// `kubectl migrate pod NAME --to NODE` (and a drain) need no broker flags.
const (
	AnnotationBrokerURL   = "migration.ms2m.io/broker-url"
	AnnotationQueue       = "migration.ms2m.io/queue"
	AnnotationExchange    = "migration.ms2m.io/exchange"
	AnnotationRoutingKey  = "migration.ms2m.io/routing-key"
	AnnotationCredentials = "migration.ms2m.io/credentials-secret"
	AnnotationMgmtURL     = "migration.ms2m.io/management-url"
)

// Flags are broker settings given explicitly (`migrate pod`'s flags);
// empty ones fall back to the pod's annotations.
type Flags struct {
	BrokerURL, Queue, Exchange, RoutingKey, CredentialsSecret, ManagementURL string
}

// MessageQueueConfig merges flags over the pod's annotations; nil when
// neither names a queue.
func (f Flags) MessageQueueConfig(pod *corev1.Pod) *v1alpha1.MessageQueueConfig {
	pick := func(flag, ann string) string {
		if flag != "" {
			return flag
		}
		return pod.Annotations[ann]
	}
	c := &v1alpha1.MessageQueueConfig{
		BrokerURL:     pick(f.BrokerURL, AnnotationBrokerURL),
		QueueName:     pick(f.Queue, AnnotationQueue),
		ExchangeName:  pick(f.Exchange, AnnotationExchange),
		RoutingKey:    pick(f.RoutingKey, AnnotationRoutingKey),
		ManagementURL: pick(f.ManagementURL, AnnotationMgmtURL),
	}
	if s := pick(f.CredentialsSecret, AnnotationCredentials); s != "" {
		c.CredentialsSecretRef = &v1alpha1.SecretReference{Name: s}
	}
	if c.QueueName == "" && c.BrokerURL == "" {
		return nil
	}
	return c
}
