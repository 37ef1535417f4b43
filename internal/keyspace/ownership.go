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

// HomeKey pins a store to the node that adopted it (AdoptScript), a hash
// of node, previous (the owner before) and lease (the adoption's claim),
// with was_node and was_previous when an earlier pin was replaced: no
// other node's claim takes the store's lease again, even once it is free,
// so a machine that comes back with an older copy of the store never
// serves it. Only another adoption moves the pin, and an adoption that
// made no store puts it back (AbandonAdoptScript).
func HomeKey(store string) string { return "storekeeper:home:" + store }

// ClaimScript takes a store's lease when it is free, or held by the same
// node on the same host (a restart after a crash: the data dir's instance
// lock, held by the caller, proves the old process is gone), with the
// next fencing token. A claim by the process that holds the lease already
// (this very claim, sent twice) keeps it as it is. A store pinned to
// another node (HomeKey) is refused whatever its lease: the answer names
// the lease's holder, or the pinned node when the lease is free.
var ClaimScript = redis.NewScript(`
local home = redis.call('HGET', KEYS[4], 'node')
if home and home ~= ARGV[1] then
  local cur = redis.call('GET', KEYS[1])
  if cur then return {'held', cur} end
  return {'held', '{"node":' .. cjson.encode(home) .. ',"host":"","instance":"","token":0}'}
end
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

// AdoptScript claims a store's lease for a node adopting it, and pins the
// store to that node (HomeKey). Without force the lease must be free;
// with force it may still be held, by a node whose heartbeat is gone
// (the prefix of NodeKey is an argument). Either way the node that owned
// the store before (StoresKey) must be down, unless it is the adopter.
// The adopter's own claim, sent again, keeps the lease as it is. KEYS:
// the lease, StoresKey, the token counter, HomeKey. ARGV: node, host,
// instance, TTL in ms, store, '1' to force, NodeKey's prefix, '1' to
// only check (the API's answer before it enqueues: nothing is written,
// and a lease is the adopter's by its node alone). It answers {'ok',
// lease, previous owner} or {'held'|'alive', holder, owner}.
var AdoptScript = redis.NewScript(`
local check = ARGV[8] == '1'
local owner = redis.call('HGET', KEYS[2], ARGV[5]) or ''
local cur = redis.call('GET', KEYS[1])
if cur then
  local l = cjson.decode(cur)
  local mine = l.node == ARGV[1] and (check or l.host == ARGV[2])
  if check and mine then return {'ok', cur, owner} end
  if mine and l.instance == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    if redis.call('HGET', KEYS[4], 'node') == ARGV[1] then
      owner = redis.call('HGET', KEYS[4], 'previous') or ''
    end
    return {'ok', cur, owner}
  end
  if not mine then
    if ARGV[6] ~= '1' then return {'held', cur, owner} end
    if redis.call('EXISTS', ARGV[7] .. l.node) == 1 then return {'alive', cur, owner} end
  end
end
if owner ~= '' and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[7] .. owner) == 1 then
  return {'alive', '', owner}
end
if check then return {'ok', cur or '', owner} end
local token = redis.call('INCR', KEYS[3])
local v = '{"node":' .. cjson.encode(ARGV[1]) .. ',"host":' .. cjson.encode(ARGV[2]) ..
  ',"instance":' .. cjson.encode(ARGV[3]) .. ',"token":' .. token .. '}'
redis.call('SET', KEYS[1], v, 'PX', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[1])
local wasNode = redis.call('HGET', KEYS[4], 'node')
local wasPrevious = redis.call('HGET', KEYS[4], 'previous') or ''
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'node', ARGV[1], 'previous', owner, 'lease', v)
if wasNode then redis.call('HSET', KEYS[4], 'was_node', wasNode, 'was_previous', wasPrevious) end
return {'ok', v, owner}
`)

// AbandonAdoptScript undoes an adoption that made no store (its backup
// could not be fetched, the node stopped): the adopter's lease is
// released, the pin AdoptScript wrote is put back as it was (removed, or
// the earlier adopter's), and the store's owner is the one before the
// adoption again, so that the old machine may serve its store if it comes
// back and another node may adopt it. Only the adoption that holds value
// (HomeKey's 'lease') is undone: sent again, or after a later adoption,
// it changes nothing. KEYS: the lease, StoresKey, HomeKey. ARGV: the
// adoption's lease value, the adopter node, the store. It answers 1 when
// this run undid the adoption (a replay answers 0: callers look at the
// state, not the answer).
var AbandonAdoptScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[3], 'lease') ~= ARGV[1] then return 0 end
local previous = redis.call('HGET', KEYS[3], 'previous') or ''
local wasNode = redis.call('HGET', KEYS[3], 'was_node')
local wasPrevious = redis.call('HGET', KEYS[3], 'was_previous') or ''
redis.call('DEL', KEYS[3])
if wasNode then redis.call('HSET', KEYS[3], 'node', wasNode, 'previous', wasPrevious) end
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then
  if previous ~= '' then redis.call('HSET', KEYS[2], ARGV[3], previous) else redis.call('HDEL', KEYS[2], ARGV[3]) end
end
return 1
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

// PublishStatsScript writes a store's stats (KEYS[2]: StatsKey, or
// BackupFilesKey for its backups' file lists) only while the publisher
// holds the store's lease (KEYS[1]): a node that lost it cannot overwrite
// what the new owner publishes.
var PublishStatsScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`)

// HeartbeatScript is RenewScript then PublishStatsScript for each of up
// to a few hundred stores, in one script: a node's heartbeat costs one
// script call per chunk of stores instead of two per store (the calls,
// not the work in them, were most of Redis's time at 100,000 stores).
//
// KEYS: per store its lease and stats keys. ARGV: the lease TTL in ms,
// then per store its lease value and status. It answers, per store, the
// renewal's state ('ok', 'expired' or 'held'), the holder when held (”
// otherwise) and 1 when the status was published, else 0. Safe to run any
// number of times: a second run renews and writes the same again.
var HeartbeatScript = redis.NewScript(`
local out = {}
for i = 1, #KEYS, 2 do
  local value, status = ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('GET', KEYS[i])
  if cur == value then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    redis.call('SET', KEYS[i + 1], status)
    out[#out + 1] = 'ok'; out[#out + 1] = ''; out[#out + 1] = 1
  elseif not cur then
    out[#out + 1] = 'expired'; out[#out + 1] = ''; out[#out + 1] = 0
  else
    out[#out + 1] = 'held'; out[#out + 1] = cur; out[#out + 1] = 0
  end
end
return out
`)

// StatsKey holds a store's latest stats and backups as JSON, published by
// its owner's heartbeat and before any job on it is marked finished: the
// API never answers from older state.
func StatsKey(store string) string { return "storekeeper:storestats:" + store }

// BackupFilesKey holds the file lists of a store's backups as JSON
// (jobs.BackupFileLists), published by its owner apart from its status
// (StatsKey), fenced by the same lease, and only when due: with the
// status of the job's end, or after the heartbeat, that finds the
// backups' ids changed, the claim new, or ten minutes passed since it
// last wrote them (worker's publishedFiles). A status with a few backups of
// a large store would otherwise carry thousands of file entries, sent at
// every heartbeat and every job's end.
func BackupFilesKey(store string) string { return "storekeeper:backupfiles:" + store }
