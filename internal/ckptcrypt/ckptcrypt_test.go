package ckptcrypt

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestEncryptedCheckpointDecryptsOnlyAsItself(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := Key(secret, "mig-1")
	dir := t.TempDir()
	plain := make([]byte, 3*segmentSize+12345) // several segments and a short last one
	_, _ = rand.Read(plain)
	src, dst := filepath.Join(dir, "a.tar"), filepath.Join(dir, "a.tar.enc")
	if err := os.WriteFile(src, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EncryptFile(key, "mig-1", src, dst); err != nil {
		t.Fatal(err)
	}
	ct, _ := os.ReadFile(dst)
	if bytes.Contains(ct, plain[:64]) {
		t.Fatal("the ciphertext holds the plaintext")
	}
	read := func(key []byte, id string, ct []byte) ([]byte, error) {
		r, err := Decrypt(key, id, bytes.NewReader(ct))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	}
	if got, err := read(key, "mig-1", ct); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("decrypted %d bytes, %v", len(got), err)
	}

	other, _ := Key(secret, "mig-2")
	if bytes.Equal(other, key) {
		t.Fatal("two checkpoints share a key")
	}
	flipped := bytes.Clone(ct)
	flipped[len(flipped)/2] ^= 1
	for name, tc := range map[string]struct {
		key []byte
		id  string
		ct  []byte
	}{
		"another checkpoint's key": {other, "mig-1", ct},
		"under another name":       {key, "mig-2", ct},
		"one bit changed":          {key, "mig-1", flipped},
		"cut short":                {key, "mig-1", ct[:len(ct)-segmentSize/2]},
		"last segment dropped":     {key, "mig-1", ct[:len(ct)-12345-16]},
	} {
		if _, err := read(tc.key, tc.id, tc.ct); !errors.Is(err, ErrNotDecrypted) {
			t.Errorf("%s: %v, want ErrNotDecrypted", name, err)
		}
	}
	if _, err := Key([]byte("short"), "mig-1"); err == nil {
		t.Error("a short secret gave a key")
	}
}

// What encryption adds to a transfer: one pass over the archive on the
// source, one on the target.
func BenchmarkEncryptFile(b *testing.B) {
	dir := b.TempDir()
	src, dst := filepath.Join(dir, "a.tar"), filepath.Join(dir, "a.tar.enc")
	plain := make([]byte, 64<<20)
	_, _ = rand.Read(plain)
	if err := os.WriteFile(src, plain, 0o600); err != nil {
		b.Fatal(err)
	}
	key, _ := Key(bytes.Repeat([]byte{1}, KeySize), "bench")
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		if err := EncryptFile(key, "bench", src, dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecrypt(b *testing.B) {
	dir := b.TempDir()
	src, dst := filepath.Join(dir, "a.tar"), filepath.Join(dir, "a.tar.enc")
	plain := make([]byte, 64<<20)
	_, _ = rand.Read(plain)
	_ = os.WriteFile(src, plain, 0o600)
	key, _ := Key(bytes.Repeat([]byte{1}, KeySize), "bench")
	if err := EncryptFile(key, "bench", src, dst); err != nil {
		b.Fatal(err)
	}
	ct, _ := os.ReadFile(dst)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		r, err := Decrypt(key, "bench", bytes.NewReader(ct))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
