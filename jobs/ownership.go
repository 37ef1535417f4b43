package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ownership keys. A worker node owns each store it opens; it writes the
// lease (SET NX with a TTL, renewed by its heartbeat) and records itself as
// the store's owner in StoresKey, where the store stays after the lease
// expires: it is then listed with its node down, and jobs for it queue on
// that node's queue until the node returns.
const StoresKey = "storekeeper:stores" // hash: store -> owning node

// LeaseKey is the owner lease of a store.
func LeaseKey(store string) string { return "storekeeper:lease:" + store }

// LeaseTokenKey counts the claims of a store's lease: each claim takes
// the next number as its fencing token, so leases are ordered and a
// holder's value is never seen again once another claim was made.
func LeaseTokenKey(store string) string { return "storekeeper:leasetoken:" + store }

// Lease is the value of a store's owner lease.
type Lease struct {
	Node     string `json:"node"`
	Host     string `json:"host"`
	Instance string `json:"instance"` // one per process start
	Token    int64  `json:"token"`    // the claim's fencing token
}

// Encode returns the lease's value.
func (l Lease) Encode() string { b, _ := json.Marshal(l); return string(b) }

// claimScript takes a store's lease when it is free, or held by the same
// node on the same host (a restart after a crash: the data dir's instance
// lock, held by the caller, proves the old process is gone), with the
// next fencing token. A claim by the process that holds the lease already
// (this very claim, sent twice) keeps it as it is.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local l = cjson.decode(cur)
  if l.node ~= ARGV[1] or l.host ~= ARGV[2] then return {'held', cur} end
  if l.instance == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('HSET', KEYS[2], ARGV[5], ARGV[1])
    return {'ok', cur}
  end
end
local token = redis.call('INCR', KEYS[3])
local v = '{"node":' .. cjson.encode(ARGV[1]) .. ',"host":' .. cjson.encode(ARGV[2]) ..
  ',"instance":' .. cjson.encode(ARGV[3]) .. ',"token":' .. token .. '}'
redis.call('SET', KEYS[1], v, 'PX', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[1])
return {'ok', v}
`)

// ClaimLease claims store's lease for l's node, host and instance. It
// returns the lease value now held (its fencing token included) and true,
// or the value another node holds and false.
func ClaimLease(ctx context.Context, rdb redis.Scripter, store string, l Lease, ttl time.Duration) (string, bool, error) {
	out, err := claimScript.Run(ctx, rdb, []string{LeaseKey(store), StoresKey, LeaseTokenKey(store)},
		l.Node, l.Host, l.Instance, ttl.Milliseconds(), store).StringSlice()
	if err != nil {
		return "", false, unavailable(err)
	}
	return out[1], out[0] == "ok", nil
}

// renewScript extends a lease only while it is still exactly ours.
var renewScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'ok', ''}
end
if not cur then return {'expired', ''} end
return {'held', cur}
`)

// LeaseState is what a renewal found.
type LeaseState int

const (
	LeaseHeld    LeaseState = iota // still ours: extended
	LeaseExpired                   // gone: free to claim again
	LeaseTaken                     // another claim holds it
)

// RenewLease extends store's lease if it still holds value. When another
// claim holds it, the second result is that claim's value.
func RenewLease(ctx context.Context, rdb redis.Scripter, store, value string, ttl time.Duration) (LeaseState, string, error) {
	out, err := renewScript.Run(ctx, rdb, []string{LeaseKey(store)}, value, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return 0, "", unavailable(err)
	}
	switch out[0] {
	case "ok":
		return LeaseHeld, "", nil
	case "expired":
		return LeaseExpired, "", nil
	}
	return LeaseTaken, out[1], nil
}

// publishStatsScript writes a store's stats only while the publisher
// holds the store's lease: a node that lost it cannot overwrite what the
// new owner publishes.
var publishStatsScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`)

// PublishStats sets store's published stats to js if lease is still the
// store's lease value; it reports whether it did.
func PublishStats(ctx context.Context, rdb redis.Scripter, store, lease, js string) (bool, error) {
	n, err := publishStatsScript.Run(ctx, rdb, []string{LeaseKey(store), StatsKey(store)}, lease, js).Int()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// DecodeLease parses a lease value.
func DecodeLease(s string) (Lease, error) {
	var l Lease
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return l, fmt.Errorf("bad lease %q: %w", s, err)
	}
	return l, nil
}

// NodeNamePattern is what a node name (default: the host name) must match.
const NodeNamePattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`

var nodeNameRE = regexp.MustCompile(NodeNamePattern)

// ValidateNodeName checks a node name.
func ValidateNodeName(name string) error {
	if !nodeNameRE.MatchString(name) {
		return fmt.Errorf("invalid node name %q: must match %s", name, NodeNamePattern)
	}
	return nil
}

// NodeQueue is the asynq queue a node consumes.
func NodeQueue(node string) string { return "node." + node }

// NotifyQueue is the queue every node consumes for notify jobs.
const NotifyQueue = "notify"

// StatsKey holds a store's latest stats and backups as JSON, published by
// its owner's heartbeat and before any job on it is marked finished: the
// API never answers from older state.
func StatsKey(store string) string { return "storekeeper:storestats:" + store }
