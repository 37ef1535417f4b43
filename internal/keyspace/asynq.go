package keyspace

import (
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// asynq's own Redis layout and task message, as asynq v0.26.0 writes them
// (internal/base and internal/proto/asynq.proto): the one place that knows
// them. The enqueue scripts write a job's asynq task in the same script as
// its record, so that a job is recorded and queued at once or not at all,
// in one round trip; the worker's crash recovery moves tasks between
// asynq's lists. worker's TestAsynqKeyLayout and jobsdb's
// TestEnqueueWritesAsynqTask check all of it against a live asynq, and
// fail loudly if a future asynq changes it.

// AsynqPendingKey, AsynqActiveKey and AsynqLeaseKey are a queue's lists of
// pending and active task ids and its sorted set of leases;
// AsynqTaskKeyPrefix followed by a task id is the task's hash.
func AsynqPendingKey(queue string) string    { return "asynq:{" + queue + "}:pending" }
func AsynqActiveKey(queue string) string     { return "asynq:{" + queue + "}:active" }
func AsynqLeaseKey(queue string) string      { return "asynq:{" + queue + "}:lease" }
func AsynqTaskKeyPrefix(queue string) string { return "asynq:{" + queue + "}:t:" }

// AsynqProcessedKey counts the tasks of queue done on t's UTC day (it
// expires AsynqStatsTTL after the day's first); AsynqProcessedTotalKey
// counts them all, wrapping at the largest int64. asynqmon reads both.
func AsynqProcessedKey(queue string, t time.Time) string {
	return "asynq:{" + queue + "}:processed:" + t.UTC().Format("2006-01-02")
}
func AsynqProcessedTotalKey(queue string) string { return "asynq:{" + queue + "}:processed" }

// AsynqStatsTTL is how long asynq keeps a day's processed count.
const AsynqStatsTTL = 90 * 24 * time.Hour

// AsynqDoneScript is asynq's own script for a task done (RDB.Done, for a
// task with no uniqueness lock and no retention, as storekeeper's are),
// copied byte for byte: asynq sends it by its SHA, which is how the worker
// recognises the call once a job's end has done its work (AsynqAck).
// worker's TestAsynqDoneScript checks the SHA against a live asynq.
//
// KEYS: active, lease, task, processed (the day's), processed (total);
// ARGV: task id, the day's count's expiry (Unix seconds), max int64.
var AsynqDoneScript = redis.NewScript(`
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("DEL", KEYS[3]) == 0 then
  return redis.error_reply("NOT FOUND")
end
local n = redis.call("INCR", KEYS[4])
if tonumber(n) == 1 then
	redis.call("EXPIREAT", KEYS[4], ARGV[2])
end
local total = redis.call("GET", KEYS[5])
if tonumber(total) == tonumber(ARGV[3]) then
	redis.call("SET", KEYS[5], 1)
else
	redis.call("INCR", KEYS[5])
end
return redis.status_reply("OK")
`)

// AsynqAck asks a Change to do, with the change, what asynq's done does
// for the task (AsynqDoneScript): take it off the queue's active list and
// lease set, delete its hash and count it processed. It does so only if
// the task is still active (asynq's recoverer may have moved it), and
// Apply reports whether the task is gone (Applied.Acked), so that the
// worker can answer asynq's own done call without sending it: a job's end
// and its task's acknowledgement are one write, in one round trip.
type AsynqAck struct {
	Queue  string
	TaskID string
	At     time.Time // the day counted, as asynq's clock would give it
}

// TaskKey is the task's hash.
func (a AsynqAck) TaskKey() string { return AsynqTaskKeyPrefix(a.Queue) + a.TaskID }

// asynqAckLua defines asynqAck(active, lease, task, day, total, id,
// expireAt): asynq's done (AsynqDoneScript) for a task still active, and
// nothing otherwise. It reports whether it acknowledged the task.
const asynqAckLua = `
local function asynqAck(active, lease, task, day, total, id, expireAt)
  if redis.call('LREM', active, 0, id) == 0 then return false end
  redis.call('ZREM', lease, id)
  redis.call('DEL', task)
  if tonumber(redis.call('INCR', day)) == 1 then redis.call('EXPIREAT', day, expireAt) end
  if tonumber(redis.call('GET', total)) == tonumber('9223372036854775807') then redis.call('SET', total, 1)
  else redis.call('INCR', total) end
  return true
end
`

// asynqDefaultTimeout is what asynq gives a task enqueued with neither a
// timeout nor a deadline.
const asynqDefaultTimeout = 30 * time.Minute

// Field numbers of asynq's TaskMessage.
const (
	asynqFieldType    = 1
	asynqFieldPayload = 2
	asynqFieldID      = 3
	asynqFieldRetry   = 5
	asynqFieldTimeout = 8
)

// AsynqTask encodes the task message asynq's client would write for
// asynq.NewTask(typ, payload) with asynq.TaskID(id), asynq.MaxRetry(retry)
// and asynq.Timeout(timeout), except its queue: the enqueue script appends
// that once it has read the store's owner (fields of a protobuf message
// may come in any order).
func AsynqTask(typ string, payload []byte, id string, retry int, timeout time.Duration) []byte {
	if timeout <= 0 {
		timeout = asynqDefaultTimeout
	}
	b := make([]byte, 0, 32+len(typ)+len(payload)+len(id))
	b = protowire.AppendTag(b, asynqFieldType, protowire.BytesType)
	b = protowire.AppendString(b, typ)
	b = protowire.AppendTag(b, asynqFieldPayload, protowire.BytesType)
	b = protowire.AppendBytes(b, payload)
	b = protowire.AppendTag(b, asynqFieldID, protowire.BytesType)
	b = protowire.AppendString(b, id)
	if retry != 0 {
		b = protowire.AppendTag(b, asynqFieldRetry, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(int32(retry))))
	}
	b = protowire.AppendTag(b, asynqFieldTimeout, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(int64(timeout/time.Second)))
	return b
}

// asynqEnqueueLua defines asynqEnqueue(queue, id, msg, t), which does what
// asynq's client does to enqueue a task (RDB.Enqueue: publish the queue,
// and unless the task exists, write its hash and push its id on the
// pending list), with msg from AsynqTask completed by the queue field.
// pending_since is t (Redis's TIME) in nanoseconds, as a string: a Lua
// number cannot hold it exactly. The task's hash is written before its
// id is pushed: if the push fails (the list's key holds something else),
// the script stops with a hash no worker will ever take.
const asynqEnqueueLua = `
local function asynqEnqueue(queue, id, msg, t)
  redis.call('SADD', 'asynq:queues', queue)
  local tkey = 'asynq:{' .. queue .. '}:t:' .. id
  if redis.call('EXISTS', tkey) == 1 then return end
  local n, len = #queue, ''
  while n >= 128 do
    len = len .. string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  msg = msg .. string.char(` + asynqFieldQueueTag + `) .. len .. string.char(n) .. queue
  redis.call('HSET', tkey, 'msg', msg, 'state', 'pending', 'pending_since', t[1] .. string.format('%06d', tonumber(t[2])) .. '000')
  redis.call('LPUSH', 'asynq:{' .. queue .. '}:pending', id)
end
`

// asynqFieldQueueTag is the tag byte of the queue field, which the
// script appends once it has picked the queue: field 4, length-delimited
// (4<<3 | 2). TestEnqueueWritesAsynqTask reads the queue back through
// asynq's Inspector.
const asynqFieldQueueTag = "34"
