package keyspace

import (
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

// ClaimScript takes a store's lease when it is free, or held by the same
// node on the same host (a restart after a crash: the data dir's instance
// lock, held by the caller, proves the old process is gone), with the
// next fencing token. A claim by the process that holds the lease already
// (this very claim, sent twice) keeps it as it is.
var ClaimScript = redis.NewScript(`
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

// RenewScript extends a lease only while it is still exactly ours.
var RenewScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'ok', ''}
end
if not cur then return {'expired', ''} end
return {'held', cur}
`)

// PublishStatsScript writes a store's stats only while the publisher
// holds the store's lease: a node that lost it cannot overwrite what the
// new owner publishes.
var PublishStatsScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`)

// StatsKey holds a store's latest stats and backups as JSON, published by
// its owner's heartbeat and before any job on it is marked finished: the
// API never answers from older state.
func StatsKey(store string) string { return "storekeeper:storestats:" + store }
