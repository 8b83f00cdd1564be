package identity

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/ckptcrypt"
)

// CheckpointKeyFile is the Secret's key that holds the secret every
// checkpoint's encryption key is derived from.
const CheckpointKeyFile = "checkpoint.key"

// EnsureCheckpointSecret loads the secret checkpoint keys are derived
// from, kept apart from the CA's key in a Secret only the manager reads,
// creating it on the first start.
func EnsureCheckpointSecret(ctx context.Context, c client.Client, namespace, name string) ([]byte, error) {
	sec := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec)
	if apierrors.IsNotFound(err) {
		var b []byte
		if b, err = ckptcrypt.NewSecret(); err != nil {
			return nil, err
		}
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "ms2m"}},
			Data: map[string][]byte{CheckpointKeyFile: b}}
		err = c.Create(ctx, sec)
		if apierrors.IsAlreadyExists(err) { // another replica was first
			err = c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec)
		}
	}
	if err != nil {
		return nil, err
	}
	b := sec.Data[CheckpointKeyFile]
	if len(b) < ckptcrypt.KeySize {
		return nil, fmt.Errorf("secret %s/%s: %s holds %d bytes, needs %d", namespace, name, CheckpointKeyFile, len(b), ckptcrypt.KeySize)
	}
	return b, nil
}
