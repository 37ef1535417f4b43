package keyspace

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// LockKey is the in-flight lock of one request (kind, store, parameters);
// RestoreLockKey is the one restore a store may have in flight. Workers
// release both on every terminal state.
func LockKey(p jobs.Payload) string {
	sum := sha256.Sum256([]byte(p.DedupeKey()))
	return "storekeeper:lock:" + p.Store + ":" + string(p.Kind) + ":" + hex.EncodeToString(sum[:8])
}

// BatchKey lists the job ids of one batch (an enqueue for every store),
// for GET /api/jobs?batch=; it expires with the records.
func BatchKey(batch string) string { return "storekeeper:batch:" + batch }

// BatchChunksKey records which chunks of a batch are written (a hash:
// chunk number to its job ids, space-separated), so a chunk's script run
// twice writes once; it expires with the batch key.
func BatchChunksKey(batch string) string { return "storekeeper:batchchunks:" + batch }

// RestoreLockKey is the restore lock of a store.
func RestoreLockKey(store string) string { return "storekeeper:lock:" + store + ":restore" }

// enqueueJobLua defines enqueueJob, the step every enqueue script takes
// for one job: route it to its store's owner, take the locks, write the
// record and append job.enqueued, or report why not: no owner, or the job
// that holds a lock. The owner is read inside, so the record's node and
// queue, the in-flight set and the event's node are completed here (the
// event arrives as JSON without a node, and gets it appended). The record
// also gets enq_ms, the time on Redis's clock, which the reconciler's
// grace is measured against. Its arguments: the lock, restore lock and
// record keys, the events stream and StoresKey, the job id, '1' for a job
// that replaces the store's data (jobs.Kind.Exclusive), the node to route
// to instead of the owner (empty for the owner: every kind but adopt), the
// events' cap, the event, the store, the prefixes of queue names,
// in-flight sets and records, the job's asynq task (AsynqTask: queued
// with the record, in the owner's queue; empty to leave that to the
// caller) and the record's fields (a table).
const enqueueJobLua = asynqEnqueueLua + `
local function enqueueJob(lock, rlock, rec, events, stores, id, restore, route, maxlen, ev, store, qprefix, iprefix, rprefix, task, fields)
  local owner = redis.call('HGET', stores, store)
  if route ~= '' then
    owner = route
  elseif not owner then
    return {'unknown', ''}
  end
  local held = redis.call('GET', lock)
  if held then
    local r = redis.call('HGETALL', rprefix .. held)
    if #r > 0 then
      local out = {'dup', held}
      for _, v in ipairs(r) do out[#out+1] = v end
      return out
    end
    -- a lock whose job record is gone is stale: take it
  end
  if restore == '1' then
    local r = redis.call('GET', rlock)
    if r then return {'conflict', r} end
  end
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local queue = qprefix .. owner
  -- The task first: a script stopped by an error keeps what it wrote, so
  -- if asynq's keys refuse it, nothing of the job is written.
  if task ~= '' then asynqEnqueue(queue, id, task, t) end
  if restore == '1' then redis.call('SET', rlock, id) end
  redis.call('SET', lock, id)
  redis.call('HSET', rec, 'node', owner, 'queue', queue, 'enq_ms', ms, unpack(fields))
  local e = string.sub(ev, 1, -2) .. ',"node":' .. cjson.encode(owner) .. '}'
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'json', e)
  redis.call('SADD', iprefix .. queue, id)
  return {'new', owner}
end
`

// EnqueueScript enqueues one job (enqueueJob) in one round trip.
//
// It is safe to run any number of times: the job id is new to this call,
// so a run that finds the record is a copy of a run that wrote it (go-redis
// sent the script again after a read timed out, and a stalled Redis ran
// both). It writes nothing and answers 'replayed' with the record as it is
// now, which may already be terminal: a reconciler can have settled it
// between the two runs, and a terminal state is final.
var EnqueueScript = redis.NewScript(enqueueJobLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then
  local r = {'replayed', ''}
  for _, v in ipairs(redis.call('HGETALL', KEYS[3])) do r[#r+1] = v end
  return r
end
return enqueueJob(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], ARGV[9], ARGV[10], {unpack(ARGV, 11)})
`)
