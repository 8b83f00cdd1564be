package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/broker"
)

// Keys of the broker credentials Secret.
const (
	SecretKeyUsername = "username"
	SecretKeyPassword = "password"
)

// resolveStream turns the spec's messageQueueConfig and credentials Secret
// into what a broker session needs.
func (r *Reconciler) resolveStream(ctx context.Context, m *v1alpha1.StatefulMigration) (broker.Stream, error) {
	c := m.Spec.MessageQueueConfig
	s := broker.Stream{URL: c.BrokerURL, ManagementURL: c.ManagementURL,
		Queue: c.QueueName, Exchange: c.ExchangeName, RoutingKey: c.RoutingKey}
	if c.CredentialsSecretRef == nil {
		return s, nil
	}
	sec := &corev1.Secret{}
	key := client.ObjectKey{Namespace: m.Namespace, Name: c.CredentialsSecretRef.Name}
	if err := r.APIReader.Get(ctx, key, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return s, &broker.Error{Reason: v1alpha1.ReasonCredentials,
				Err: fmt.Errorf("credentials Secret %q not found in namespace %q", key.Name, key.Namespace)}
		}
		return s, err
	}
	user, pass := string(sec.Data[SecretKeyUsername]), string(sec.Data[SecretKeyPassword])
	if user == "" || pass == "" {
		return s, &broker.Error{Reason: v1alpha1.ReasonCredentials,
			Err: fmt.Errorf("credentials Secret %q needs the keys %q and %q", key.Name, SecretKeyUsername, SecretKeyPassword)}
	}
	s.Username, s.Password = user, pass
	return s, nil
}
