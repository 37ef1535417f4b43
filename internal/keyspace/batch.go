package keyspace

import (
	"github.com/redis/go-redis/v9"
)

// EnqueueBatchScript enqueues one chunk of a batch: one job per store
// (enqueueJob each, its asynq task queued with its record), listed under
// the batch key, in one atomic step: every job of the chunk is recorded,
// queued and listed together. A store that has no owner any more
// (forgotten since the caller listed the stores) answers 'gone' and is
// left out of the batch. Should a job's write fail (asynq's keys hold
// something else), the chunk stops there: the jobs before it are
// recorded, queued and listed, nothing of it or of the stores after it is
// written, and its answer is 'error' with the store and why, which is
// kept with the chunk for a replay to answer again.
//
// KEYS: the events stream, StoresKey, the batch key, the batch's chunks
// key (BatchChunksKey), then per job its lock, restore lock and record.
// ARGV: the events' cap, the prefixes of queue names, in-flight sets and
// records, the batch keys' TTL in ms, the chunk's number, then per job
// its id, store, event, asynq task (AsynqTask), the number of its
// record's fields and the fields.
//
// It is safe to run any number of times: the batch id is new to the call
// and each chunk is sent under its own number, so a run that finds its
// chunk recorded is a copy of a run that wrote it. It writes nothing and
// answers 'replayed', the chunk's error (its store and message, ” if
// none), and the records of
// the chunk's jobs as they are now
// (the caller tells its own from the held ones by id), which may be
// terminal by then.
var EnqueueBatchScript = redis.NewScript(enqueueJobLua + `
local done = redis.call('HGET', KEYS[4], ARGV[6])
if done then
  local e = redis.call('HMGET', KEYS[4], ARGV[6] .. ':errstore', ARGV[6] .. ':error')
  local r = {'replayed', e[1] or '', e[2] or ''}
  for id in string.gmatch(done, '%S+') do
    r[#r+1] = redis.call('HGETALL', ARGV[4] .. id)
  end
  return r
end
local r = {'ok'}
local ids = {}
local a = 7
for k = 5, #KEYS, 3 do
  local n = tonumber(ARGV[a+4])
  local ok, out = pcall(enqueueJob, KEYS[k], KEYS[k+1], KEYS[k+2], KEYS[1], KEYS[2], ARGV[a], '0', '', ARGV[1], ARGV[a+2], ARGV[a+1],
    ARGV[2], ARGV[3], ARGV[4], ARGV[a+3], {unpack(ARGV, a+5, a+4+n)})
  if not ok then
    -- Nothing of this job was written (enqueueJob queues its task
    -- first): the chunk stops here, and says why.
    local msg = type(out) == 'table' and out.err or tostring(out)
    r[#r+1] = {'error', ARGV[a+1], msg}
    redis.call('HSET', KEYS[4], ARGV[6] .. ':error', msg, ARGV[6] .. ':errstore', ARGV[a+1])
    break
  end
  if out[1] == 'unknown' then
    r[#r+1] = {'gone'}
  else
    r[#r+1] = out
    if out[1] == 'new' then ids[#ids+1] = ARGV[a] else ids[#ids+1] = out[2] end
  end
  a = a + 5 + n
end
for i = 1, #ids, 1000 do -- unpack has a limit
  redis.call('SADD', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('HSET', KEYS[4], ARGV[6], table.concat(ids, ' '))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return r
`)
