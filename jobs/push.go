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
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

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

// VAPIDKey holds the deployment's JSON VAPIDKeys, set once (SET NX).
// Deleting it makes a new pair on next use, and every subscription made
// with the old public key stops working.
const VAPIDKey = "storekeeper:push:vapid"

// PushSubscriptionsKey holds the browsers subscribed to Web Push:
// PushSubscriptionID(owner, endpoint) -> JSON PushSubscriptionRecord;
// PushOwnerKey(owner) indexes each owner's.
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

// legacyPushSubscriptionID is the first layout's id: of the endpoint
// alone, whoever subscribed it.
func legacyPushSubscriptionID(endpoint string) string {
	sum := sha256.Sum256([]byte(endpoint))
	return hex.EncodeToString(sum[:12])
}

func isLegacyID(id string) bool { return len(id) == 24 }

// PushOwnerKey is the set of the ids of owner's subscriptions, the index
// that bounds them per token.
func PushOwnerKey(owner string) string { return "storekeeper:push:owner:" + owner }

// PushMovedKey maps the first layout's ids to the ids their subscriptions
// were moved to, so a notify job queued before the move still finds its
// browser. It expires a week after the last move.
const PushMovedKey = "storekeeper:push:moved"

const pushMovedTTL = 7 * 24 * time.Hour

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

// Subscribe validates s, checks its endpoint and keeps it as owner's,
// replacing owner's earlier subscription of the same endpoint; another
// token's subscription of it is left alone. ErrTooManySubscriptions when
// owner has PerToken subscriptions of other endpoints already.
func Subscribe(ctx context.Context, rdb redis.Cmdable, s PushSubscription, owner string, opts SubscribeOptions) (PushSubscriptionRecord, error) {
	if err := s.Validate(); err != nil {
		return PushSubscriptionRecord{}, err
	}
	if err := CheckPushEndpoint(ctx, opts.Policy, s.Endpoint); err != nil {
		return PushSubscriptionRecord{}, err
	}
	if owner == "" {
		return PushSubscriptionRecord{}, errors.New("push subscription: no owner")
	}
	limit := opts.PerToken
	if limit <= 0 {
		limit = DefaultPushSubscriptionsPerToken
	}
	if _, err := migratePushSubscriptions(ctx, rdb, nil); err != nil {
		return PushSubscriptionRecord{}, err
	}
	rec := PushSubscriptionRecord{ID: PushSubscriptionID(owner, s.Endpoint), PushSubscription: s, Owner: owner, Actor: owner,
		SubscribedAt: time.Now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return PushSubscriptionRecord{}, err
	}
	kept, err := subscribeScript.Run(ctx, rdb, []string{PushSubscriptionsKey, PushOwnerKey(owner)}, rec.ID, string(b), limit).Int()
	if err != nil {
		return PushSubscriptionRecord{}, unavailable(err)
	}
	if kept == 0 {
		return PushSubscriptionRecord{}, fmt.Errorf("%w: token %s has %d, the most one token may have; unsubscribe one first",
			ErrTooManySubscriptions, owner, limit)
	}
	return rec, nil
}

// pruneOwnerLua drops from the owner's set (KEYS[2]) the ids whose
// subscription is gone from KEYS[1] (forgotten by a node of the first
// layout, which did not keep the set).
const pruneOwnerLua = `
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], m) == 0 then redis.call('SREM', KEYS[2], m) end
end
`

// subscribeScript keeps subscription ARGV[1] (JSON ARGV[2]) in KEYS[1] and
// in its owner's set KEYS[2], unless it is new and the owner has ARGV[3]
// already: 1 kept, 0 refused.
var subscribeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
` + pruneOwnerLua + `
  if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
`)

// forgetScript deletes subscription ARGV[1] from KEYS[1] and from its
// owner's set KEYS[2]: 1 deleted, 0 there was none.
var forgetScript = redis.NewScript(`
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n
`)

// Unsubscribe forgets owner's subscription of endpoint and returns its id:
// ErrUnknownSubscription when owner has none, whoever else has.
func Unsubscribe(ctx context.Context, rdb redis.Cmdable, owner, endpoint string) (string, error) {
	if _, err := migratePushSubscriptions(ctx, rdb, nil); err != nil {
		return "", err
	}
	id := PushSubscriptionID(owner, endpoint)
	if err := forget(ctx, rdb, id, owner); err != nil {
		return "", err
	}
	return id, nil
}

// UnsubscribeEndpoint forgets every token's subscription of endpoint (an
// operator's unsubscribe) and returns their ids, sorted;
// ErrUnknownSubscription when there was none.
func UnsubscribeEndpoint(ctx context.Context, rdb redis.Cmdable, endpoint string) ([]string, error) {
	if _, err := migratePushSubscriptions(ctx, rdb, nil); err != nil {
		return nil, err
	}
	all, err := rdb.HGetAll(ctx, PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var ids []string
	for id, v := range all {
		var rec PushSubscriptionRecord
		if json.Unmarshal([]byte(v), &rec) != nil || rec.Endpoint != endpoint {
			continue
		}
		if err := forget(ctx, rdb, id, rec.Owner); errors.Is(err, ErrUnknownSubscription) {
			continue // gone meanwhile
		} else if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no subscription of that endpoint", ErrUnknownSubscription)
	}
	slices.Sort(ids)
	return ids, nil
}

// ForgetPushSubscription deletes subscription id (ErrUnknownSubscription
// when there is none), as a push service's 404 or 410 asks.
func ForgetPushSubscription(ctx context.Context, rdb redis.Cmdable, id string) error {
	rec, err := PushSubscriptionByID(ctx, rdb, id)
	if err != nil {
		return err
	}
	return forget(ctx, rdb, rec.ID, rec.Owner)
}

// forget deletes id, owner's (an id is owner's for good: it is a hash of
// the owner and the endpoint).
func forget(ctx context.Context, rdb redis.Cmdable, id, owner string) error {
	n, err := forgetScript.Run(ctx, rdb, []string{PushSubscriptionsKey, PushOwnerKey(owner)}, id).Int()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w %s", ErrUnknownSubscription, id)
	}
	return nil
}

// PushSubscriptionByID returns subscription id. An id of the first layout
// finds the subscription it was moved to (its record has the new ID).
func PushSubscriptionByID(ctx context.Context, rdb redis.Cmdable, id string) (PushSubscriptionRecord, error) {
	v, err := rdb.HGet(ctx, PushSubscriptionsKey, id).Result()
	if errors.Is(err, redis.Nil) && isLegacyID(id) {
		moved, merr := rdb.HGet(ctx, PushMovedKey, id).Result()
		if merr == nil {
			v, err = rdb.HGet(ctx, PushSubscriptionsKey, moved).Result()
		} else if !errors.Is(merr, redis.Nil) {
			err = merr
		}
	}
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
	if rec.Owner == "" { // a first-layout record not moved yet
		rec.Owner = rec.Actor
	}
	return rec, nil
}

// PushSubscriptionIDs lists the subscriptions' ids, sorted, once any of
// the first layout are moved.
func PushSubscriptionIDs(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	ids, err := rdb.HKeys(ctx, PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	if ids, err = migratePushSubscriptions(ctx, rdb, ids); err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

// The first layout kept every subscription under the id of its endpoint
// alone, whoever made it, with the token name as its actor. Each is moved
// to its owner's (actor's) id as soon as any node of this layout lists,
// adds or removes subscriptions: newest first, at most
// DefaultPushSubscriptionsPerToken per owner (a token that filled the old
// global bound keeps its newest eight), never over the owner's own
// subscription of the same endpoint (it is newer). Each move is one
// script that does nothing if the entry changed meanwhile, so nodes
// moving at once agree. PushMovedKey remembers where each went.
//
// migratePushSubscriptions moves the first-layout entries among ids (all
// of them when ids is nil) and returns ids as they are after.
func migratePushSubscriptions(ctx context.Context, rdb redis.Cmdable, ids []string) ([]string, error) {
	if ids == nil {
		var err error
		if ids, err = rdb.HKeys(ctx, PushSubscriptionsKey).Result(); err != nil {
			return nil, unavailable(err)
		}
	}
	var legacy []string
	for _, id := range ids {
		if isLegacyID(id) {
			legacy = append(legacy, id)
		}
	}
	if len(legacy) == 0 {
		return ids, nil
	}
	vals, err := rdb.HMGet(ctx, PushSubscriptionsKey, legacy...).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	type entry struct {
		id, raw string
		rec     PushSubscriptionRecord
	}
	var entries []entry
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // gone meanwhile
		}
		e := entry{id: legacy[i], raw: raw}
		_ = json.Unmarshal([]byte(raw), &e.rec) // undecodable: no owner, dropped
		entries = append(entries, e)
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return b.rec.SubscribedAt.Compare(a.rec.SubscribedAt) })
	for _, e := range entries {
		owner := e.rec.Actor
		var newID, value string
		if owner != "" && e.rec.Endpoint != "" {
			rec := e.rec
			rec.ID, rec.Owner = PushSubscriptionID(owner, rec.Endpoint), owner
			b, _ := json.Marshal(rec)
			newID, value = rec.ID, string(b)
		}
		err := migrateScript.Run(ctx, rdb, []string{PushSubscriptionsKey, PushOwnerKey(owner), PushMovedKey},
			e.id, e.raw, newID, value, DefaultPushSubscriptionsPerToken, int(pushMovedTTL/time.Second)).Err()
		if err != nil {
			return nil, unavailable(err)
		}
	}
	after, err := rdb.HKeys(ctx, PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	return after, nil
}

// migrateScript moves first-layout entry ARGV[1] (still ARGV[2], or
// nothing is done: -1) to ARGV[3] (JSON ARGV[4]) in KEYS[1] and the
// owner's set KEYS[2], unless the owner has ARGV[5] already (2, dropped)
// or its own entry of that endpoint (0, kept); an entry with no owner
// (ARGV[3] empty) is dropped. KEYS[3] maps the old id to the new for
// ARGV[6] seconds.
var migrateScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] == '' then return 2 end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
` + pruneOwnerLua + `
  if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1
`)

var b64 = base64.RawURLEncoding

// decodeB64 decodes base64url, padded or not (browsers leave it off).
func decodeB64(s string) ([]byte, error) { return b64.DecodeString(strings.TrimRight(s, "=")) }
