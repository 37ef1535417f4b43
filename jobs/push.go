package jobs

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Web Push. One VAPID key pair serves the whole deployment and lives in
// Redis, so every node signs alike and a browser's subscription (bound to
// the public key it was made with) works whichever node sends. Browser
// subscriptions are sinks like the configured webhooks: a notification is
// delivered to each by its own notify job, whose sink is PushSink(id).

var (
	// ErrBadSubscription: a push subscription that is not a browser's
	// PushSubscription (or names an endpoint we will not call). 400.
	ErrBadSubscription = errors.New("invalid push subscription")
	// ErrUnknownSubscription: no subscription for that endpoint or id. 404.
	ErrUnknownSubscription = errors.New("unknown push subscription")
	// ErrTooManySubscriptions: MaxPushSubscriptions browsers are
	// subscribed already. 409.
	ErrTooManySubscriptions = errors.New("too many push subscriptions")
)

// MaxPushSubscriptions bounds the browsers subscribed to Web Push: each
// one is a notify job per notification, and a POST to a URL a viewer gave.
const MaxPushSubscriptions = 256

// VAPIDKey holds the deployment's JSON VAPIDKeys, set once (SET NX).
// Deleting it makes a new pair on next use, and every subscription made
// with the old public key stops working.
const VAPIDKey = "storekeeper:push:vapid"

// PushSubscriptionsKey holds the browsers subscribed to Web Push:
// PushSubscriptionID(endpoint) -> JSON PushSubscriptionRecord.
const PushSubscriptionsKey = "storekeeper:push:subscriptions"

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

// VAPID returns the deployment's VAPID keys, making them on first use:
// SET NX, then read back, so concurrent first callers on any nodes all
// get the pair that won.
func VAPID(ctx context.Context, rdb redis.Cmdable) (VAPIDKeys, error) {
	v, err := rdb.Get(ctx, VAPIDKey).Result()
	if errors.Is(err, redis.Nil) {
		k, gerr := GenerateVAPIDKeys()
		if gerr != nil {
			return VAPIDKeys{}, gerr
		}
		b, _ := json.Marshal(k)
		if err := rdb.SetNX(ctx, VAPIDKey, string(b), 0).Err(); err != nil {
			return VAPIDKeys{}, unavailable(err)
		}
		v, err = rdb.Get(ctx, VAPIDKey).Result()
	}
	if err != nil {
		return VAPIDKeys{}, unavailable(err)
	}
	var k VAPIDKeys
	if err := json.Unmarshal([]byte(v), &k); err != nil {
		return VAPIDKeys{}, fmt.Errorf("vapid keys in %s: %w", VAPIDKey, err)
	}
	if err := k.Validate(); err != nil {
		return VAPIDKeys{}, fmt.Errorf("vapid keys in %s: %w", VAPIDKey, err)
	}
	return k, nil
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

// Validate checks s. Endpoints must be https, except http to a loopback
// host (a push service on the same machine, as in tests).
func (s PushSubscription) Validate() error {
	if len(s.Endpoint) > maxEndpoint {
		return fmt.Errorf("%w: endpoint is over %d bytes", ErrBadSubscription, maxEndpoint)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || !(u.Scheme == "https" || u.Scheme == "http" && loopback(u.Hostname())) {
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

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PushSubscriptionRecord is a subscription as kept: the browser's JSON,
// plus who subscribed and when.
type PushSubscriptionRecord struct {
	ID string `json:"id"`
	PushSubscription
	Actor        string    `json:"actor"`
	SubscribedAt time.Time `json:"subscribed_at"`
}

// PushSubscriptionID is a subscription's stable id: a hash of its
// endpoint, so a browser subscribing again replaces its entry.
func PushSubscriptionID(endpoint string) string {
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

// Subscribe validates s and keeps it for actor, replacing an earlier
// subscription of the same endpoint.
func Subscribe(ctx context.Context, rdb redis.Cmdable, s PushSubscription, actor string) (PushSubscriptionRecord, error) {
	if err := s.Validate(); err != nil {
		return PushSubscriptionRecord{}, err
	}
	rec := PushSubscriptionRecord{ID: PushSubscriptionID(s.Endpoint), PushSubscription: s, Actor: actor, SubscribedAt: time.Now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return PushSubscriptionRecord{}, err
	}
	kept, err := subscribeScript.Run(ctx, rdb, []string{PushSubscriptionsKey}, rec.ID, string(b), MaxPushSubscriptions).Int()
	if err != nil {
		return PushSubscriptionRecord{}, unavailable(err)
	}
	if kept == 0 {
		return PushSubscriptionRecord{}, fmt.Errorf("%w: %d browsers are subscribed; unsubscribe one first", ErrTooManySubscriptions, MaxPushSubscriptions)
	}
	return rec, nil
}

// subscribeScript keeps a subscription unless the bound is reached; an
// endpoint already subscribed is replaced whatever the count.
var subscribeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// Unsubscribe forgets the subscription of endpoint and returns its id.
func Unsubscribe(ctx context.Context, rdb redis.Cmdable, endpoint string) (string, error) {
	id := PushSubscriptionID(endpoint)
	if err := ForgetPushSubscription(ctx, rdb, id); err != nil {
		return "", err
	}
	return id, nil
}

// ForgetPushSubscription deletes subscription id (ErrUnknownSubscription
// when there is none).
func ForgetPushSubscription(ctx context.Context, rdb redis.Cmdable, id string) error {
	n, err := rdb.HDel(ctx, PushSubscriptionsKey, id).Result()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w %s", ErrUnknownSubscription, id)
	}
	return nil
}

// PushSubscriptionByID returns subscription id.
func PushSubscriptionByID(ctx context.Context, rdb redis.Cmdable, id string) (PushSubscriptionRecord, error) {
	v, err := rdb.HGet(ctx, PushSubscriptionsKey, id).Result()
	if errors.Is(err, redis.Nil) {
		return PushSubscriptionRecord{}, fmt.Errorf("%w %s", ErrUnknownSubscription, id)
	}
	if err != nil {
		return PushSubscriptionRecord{}, unavailable(err)
	}
	var rec PushSubscriptionRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return PushSubscriptionRecord{}, fmt.Errorf("push subscription %s: %w", id, err)
	}
	return rec, nil
}

// PushSubscriptionIDs lists the subscriptions' ids, sorted.
func PushSubscriptionIDs(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	ids, err := rdb.HKeys(ctx, PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	slices.Sort(ids)
	return ids, nil
}

var b64 = base64.RawURLEncoding

// decodeB64 decodes base64url, padded or not (browsers leave it off).
func decodeB64(s string) ([]byte, error) { return b64.DecodeString(strings.TrimRight(s, "=")) }
