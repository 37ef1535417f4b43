package jobs

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"storekeeper/internal/netguard"
)

// Web Push. One VAPID key pair serves the whole deployment and lives in
// Redis, so every node signs alike and a browser's subscription (bound to
// the public key it was made with) works whichever node sends. Browser
// subscriptions are sinks like the configured webhooks: a notification is
// delivered to each by its own notify job, whose sink is PushSink(id).
//
// A subscription belongs to the token that made it (its name, the
// Owner): it is keyed by owner and endpoint, only its owner (or an
// operator) may remove it, and each token keeps at most PerToken (default
// 8), so the fan-out of a notification is bounded by the deployment's
// tokens, not by one viewer. Its endpoint is a URL a viewer gave: it must
// be https to a host with public addresses only (CheckPushEndpoint, at
// subscribe time; the worker's dialer checks again at every connection).

var (
	// ErrBadSubscription: a push subscription that is not a browser's
	// PushSubscription (or names an endpoint we will not call). 400.
	ErrBadSubscription = errors.New("invalid push subscription")
	// ErrEndpointRefused (an ErrBadSubscription): the endpoint is not
	// https to a host with public addresses only. 400.
	ErrEndpointRefused = fmt.Errorf("%w: push endpoint refused", ErrBadSubscription)
	// ErrUnknownSubscription: no subscription for that endpoint or id
	// (of the caller's token). 404.
	ErrUnknownSubscription = errors.New("unknown push subscription")
	// ErrTooManySubscriptions: the token has its most subscriptions
	// already. 409.
	ErrTooManySubscriptions = errors.New("too many push subscriptions")
)

// DefaultPushSubscriptionsPerToken bounds the browsers one token may
// subscribe: each is a notify job per notification and a POST to a URL
// the token's holder gave.
const DefaultPushSubscriptionsPerToken = 8

// VAPIDKeys is a P-256 key pair in the encoding browsers and push
// libraries use: unpadded base64url of the uncompressed public point (65
// bytes; a browser's applicationServerKey) and of the private scalar (32
// bytes).
type VAPIDKeys struct {
	Public  string `json:"public"`
	Private string `json:"private"`
}

// GenerateVAPIDKeys makes a new key pair. Callers want VAPID, which makes
// one only when the deployment has none.
func GenerateVAPIDKeys() (VAPIDKeys, error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return VAPIDKeys{}, err
	}
	return VAPIDKeys{Public: b64.EncodeToString(k.PublicKey().Bytes()), Private: b64.EncodeToString(k.Bytes())}, nil
}

// Validate checks that Private is a P-256 scalar whose public point is
// Public.
func (k VAPIDKeys) Validate() error {
	priv, err := decodeB64(k.Private)
	if err != nil {
		return fmt.Errorf("vapid private key: %w", err)
	}
	key, err := ecdh.P256().NewPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("vapid private key: %w", err)
	}
	pub, err := decodeB64(k.Public)
	if err != nil || !bytes.Equal(pub, key.PublicKey().Bytes()) {
		return errors.New("vapid public key does not match the private key")
	}
	return nil
}

// PushSubscription is a browser's subscription as PushSubscription.toJSON
// gives it.
type PushSubscription struct {
	Endpoint string `json:"endpoint"`
	// ExpirationTime (ms since the epoch, usually null) is kept, not used:
	// the push service answers 404/410 once the subscription is gone.
	ExpirationTime *int64           `json:"expirationTime,omitempty"`
	Keys           SubscriptionKeys `json:"keys"`
}

// SubscriptionKeys are the browser's keys for message encryption
// (RFC 8291), unpadded base64url: its P-256 public key (uncompressed, 65
// bytes) and its 16-byte authentication secret.
type SubscriptionKeys struct {
	P256dh string `json:"p256dh"`
	Auth   string `json:"auth"`
}

// maxEndpoint bounds an endpoint URL; push services' are a few hundred
// bytes.
const maxEndpoint = 2048

// Validate checks s's form: an absolute http(s) endpoint URL and the
// browser's keys. Where the endpoint may lead is CheckPushEndpoint's to
// say; Subscribe checks both.
func (s PushSubscription) Validate() error {
	if len(s.Endpoint) > maxEndpoint {
		return fmt.Errorf("%w: endpoint is over %d bytes", ErrBadSubscription, maxEndpoint)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%w: endpoint %q is not an https URL", ErrBadSubscription, s.Endpoint)
	}
	pub, err := decodeB64(s.Keys.P256dh)
	if err != nil || len(pub) != 65 {
		return fmt.Errorf("%w: keys.p256dh must be the base64url of a 65-byte uncompressed P-256 point", ErrBadSubscription)
	}
	if _, err := ecdh.P256().NewPublicKey(pub); err != nil {
		return fmt.Errorf("%w: keys.p256dh is not a P-256 point", ErrBadSubscription)
	}
	auth, err := decodeB64(s.Keys.Auth)
	if err != nil || len(auth) != 16 {
		return fmt.Errorf("%w: keys.auth must be the base64url of 16 bytes", ErrBadSubscription)
	}
	return nil
}

// CheckPushEndpoint is the push endpoint check, the same at subscribe
// time and before every delivery: an https URL (http too when
// p.AllowPrivate) to a host that resolves to public addresses only
// (netguard). Errors wrap ErrEndpointRefused and say nothing the caller
// did not give (never what a host resolved to).
func CheckPushEndpoint(ctx context.Context, p netguard.Policy, endpoint string) error {
	if len(endpoint) > maxEndpoint {
		return fmt.Errorf("%w: endpoint is over %d bytes", ErrEndpointRefused, maxEndpoint)
	}
	u, err := url.Parse(endpoint)
	if err == nil && (u.User != nil || u.Fragment != "") {
		return fmt.Errorf("%w: endpoint has user info or a fragment", ErrEndpointRefused)
	}
	if err := p.CheckURL(ctx, endpoint); err != nil {
		reason, _ := netguard.Reason(err)
		if reason == "" {
			reason = "not allowed"
		}
		return fmt.Errorf("%w: %s", ErrEndpointRefused, reason)
	}
	return nil
}

// PushSubscriptionRecord is a subscription as kept: the browser's JSON,
// plus whose it is and when it was made.
type PushSubscriptionRecord struct {
	ID string `json:"id"`
	PushSubscription
	// Owner is the name of the token that subscribed: only it (or an
	// operator) may unsubscribe it, and it counts against that token's
	// bound.
	Owner string `json:"owner"`
	// Actor is Owner too (the records of the first layout had only it).
	Actor        string    `json:"actor"`
	SubscribedAt time.Time `json:"subscribed_at"`
}

// PushSubscriptionID is the stable id of owner's subscription of
// endpoint: a browser subscribing again with the same token replaces its
// entry, the same browser with another token has an entry of its own.
// Ids are 32 hex digits (the first layout's, of the endpoint alone, were
// 24).
func PushSubscriptionID(owner, endpoint string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%d:%s%s", len(owner), owner, endpoint))
	return hex.EncodeToString(sum[:16])
}

// LegacyPushSubscriptionID is the first layout's id: of the endpoint
// alone, whoever subscribed it.
func LegacyPushSubscriptionID(endpoint string) string {
	sum := sha256.Sum256([]byte(endpoint))
	return hex.EncodeToString(sum[:12])
}

// pushSinkPrefix starts the sink name of every push subscription.
const pushSinkPrefix = "push-"

// PushSink is the notify sink name of subscription id.
func PushSink(id string) string { return pushSinkPrefix + id }

// PushSinkID reports whether sink names a push subscription, and which.
func PushSinkID(sink string) (string, bool) {
	id, ok := strings.CutPrefix(sink, pushSinkPrefix)
	return id, ok && id != ""
}

// SubscribeOptions are the deployment's rules for new subscriptions.
type SubscribeOptions struct {
	// Policy says where endpoints may lead (the zero Policy: https to
	// public addresses only).
	Policy netguard.Policy
	// PerToken bounds one token's subscriptions (default
	// DefaultPushSubscriptionsPerToken).
	PerToken int
}

var b64 = base64.RawURLEncoding

// decodeB64 decodes base64url, padded or not (browsers leave it off).
func decodeB64(s string) ([]byte, error) { return b64.DecodeString(strings.TrimRight(s, "=")) }
