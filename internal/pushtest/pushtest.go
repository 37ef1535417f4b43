// Package pushtest makes what a browser makes when it subscribes to Web
// Push, for tests: a P-256 key pair and a 16-byte authentication secret,
// and their base64url forms as PushSubscription.toJSON gives them. It
// also waits, as the dashboard does, for a /ws watcher to be subscribed
// (WaitLive).
package pushtest

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"testing"
)

// Browser is one subscribing browser's secrets and their public forms.
type Browser struct {
	Key    *ecdh.PrivateKey
	Secret []byte
	P256dh string // base64url of the uncompressed public key
	Auth   string // base64url of Secret
}

// NewBrowser makes a fresh key pair and secret.
func NewBrowser(t testing.TB) Browser {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	return Browser{Key: k, Secret: secret, P256dh: base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()),
		Auth: base64.RawURLEncoding.EncodeToString(secret)}
}
