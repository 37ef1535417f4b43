package keyspace

import (
	"github.com/redis/go-redis/v9"
)

// EnqueueBatchScript enqueues one job per store (enqueueJob each) and
// lists them all under the batch key, in one atomic step: every job of
// the batch is recorded and listed, or none is. It first checks that every
// store has an owner ('unknown' names the one that has not) before it
// writes anything.
//
// KEYS: the events stream, StoresKey, the batch key, then per job its
// lock, restore lock and record. ARGV: the events' cap, the prefixes of
// queue names, in-flight sets and records, the batch key's TTL in ms, then
// per job its id, store, event, the number of its record's fields and the
// fields.
//
// It is safe to run any number of times: the batch id is new to the call,
// so a run that finds the batch key is a copy of a run that wrote it. It
// writes nothing and answers 'replayed' with the records of the batch's
// jobs as they are now (the caller tells its own from the held ones by
// id), which may be terminal by then.
var EnqueueBatchScript = redis.NewScript(enqueueJobLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then
  local r = {'replayed'}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    r[#r+1] = redis.call('HGETALL', ARGV[4] .. id)
  end
  return r
end
local jobs = {}
local a = 6
for k = 4, #KEYS, 3 do
  local n = tonumber(ARGV[a+3])
  local j = {lock = KEYS[k], rlock = KEYS[k+1], rec = KEYS[k+2], id = ARGV[a], store = ARGV[a+1], ev = ARGV[a+2],
    fields = {unpack(ARGV, a+4, a+3+n)}}
  if redis.call('HEXISTS', KEYS[2], j.store) == 0 then return {'unknown', j.store} end
  jobs[#jobs+1] = j
  a = a + 4 + n
end
local r = {'ok'}
local ids = {}
for _, j in ipairs(jobs) do
  local out = enqueueJob(j.lock, j.rlock, j.rec, KEYS[1], KEYS[2], j.id, '0', '', ARGV[1], j.ev, j.store,
    ARGV[2], ARGV[3], ARGV[4], j.fields)
  r[#r+1] = out
  if out[1] == 'new' then ids[#ids+1] = j.id else ids[#ids+1] = out[2] end
end
for i = 1, #ids, 1000 do -- unpack has a limit
  redis.call('SADD', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return r
`)
