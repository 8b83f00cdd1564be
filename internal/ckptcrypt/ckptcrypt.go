// Package ckptcrypt encrypts a checkpoint archive before it leaves its
// node: a checkpoint is a workload's whole memory, secrets included, and a
// registry (or a node's disk on the way) is no place to keep it readable.
//
// Each checkpoint has a key of its own, derived by the manager from a
// secret only it reads and handed over mTLS to the two agents that need it,
// never written beside the data. The archive is encrypted with Tink's
// streaming AEAD (AES-256-GCM-HKDF, 1 MiB segments): authenticated
// segment by segment, bound to the checkpoint's ID, so a reader stops at
// the first byte that is not what the source wrote, and a ciphertext moved
// under another checkpoint's name does not decrypt.
package ckptcrypt

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tink-crypto/tink-go/v2/streamingaead/subtle"
)

// KeySize is the size of a checkpoint key and of the manager's secret.
const KeySize = 32

const segmentSize = 1 << 20

// NewSecret is a fresh secret for the manager to derive keys from.
func NewSecret() ([]byte, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Key is checkpoint id's key, derived from the manager's secret.
func Key(secret []byte, id string) ([]byte, error) {
	if len(secret) < KeySize {
		return nil, fmt.Errorf("the checkpoint key secret has %d bytes, needs %d", len(secret), KeySize)
	}
	return hkdf.Key(sha256.New, secret, []byte("ms2m checkpoint key"), id, KeySize)
}

func aead(key []byte) (*subtle.AESGCMHKDF, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("a checkpoint key has %d bytes, not %d", KeySize, len(key))
	}
	return subtle.NewAESGCMHKDF(key, "SHA256", KeySize, segmentSize, 0)
}

// EncryptFile writes src, encrypted with key for checkpoint id, to dst
// (created 0600).
func EncryptFile(key []byte, id, src, dst string) error {
	a, err := aead(key)
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w, err := a.NewEncryptingWriter(out, []byte(id))
	if err == nil {
		_, err = io.CopyBuffer(w, in, make([]byte, segmentSize))
		err = errors.Join(err, w.Close())
	}
	if err = errors.Join(err, out.Close()); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("encrypting checkpoint %s: %w", id, err)
	}
	return nil
}

// ErrNotDecrypted: the ciphertext is not what the source agent wrote for
// this checkpoint with this key.
var ErrNotDecrypted = errors.New("the checkpoint does not decrypt with its key")

// Decrypt reads what EncryptFile wrote of checkpoint id from r. A read
// fails with ErrNotDecrypted at the first segment that does not
// authenticate (altered, truncated, another checkpoint's, another key).
func Decrypt(key []byte, id string, r io.Reader) (io.Reader, error) {
	a, err := aead(key)
	if err != nil {
		return nil, err
	}
	d, err := a.NewDecryptingReader(r, []byte(id))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotDecrypted, err)
	}
	return reader{d}, nil
}

type reader struct{ r io.Reader }

func (r reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %v", ErrNotDecrypted, err)
	}
	return n, err
}
