package keyspace

import (
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// OutboxKey is the list of notifications written with the change that
// caused them (in the same atomic step) and not yet handed to the notify
// queue. Each worker moves entries to its own OutboxProcessingKey while it
// enqueues their deliveries, so a crash loses none.
const OutboxKey = "storekeeper:outbox"

// OutboxProcessingKey is node's list of notifications being dispatched.
func OutboxProcessingKey(node string) string { return OutboxKey + ":" + node }

// OutboxPush is the push that queues n in the outbox, for a caller that
// writes it with other commands in one transaction.
func OutboxPush(n jobs.Notification) ListPush {
	b, _ := json.Marshal(n)
	return ListPush{Key: OutboxKey, Value: string(b)}
}

// Notify adds n to the outbox as part of the change.
func (c *Change) Notify(n jobs.Notification) { c.Push = append(c.Push, OutboxPush(n)) }

// NotifyFailedKey counts notify jobs that failed for good (they are
// logged and counted, never notified).
const NotifyFailedKey = "storekeeper:notify:failed"

// DeliveryKey marks one notification as handed to one sink's queue.
func DeliveryKey(notificationID, sink string) string {
	return "storekeeper:delivery:" + notificationID + ":" + sink
}

// EnqueueNotifyScript creates a notify job's record and queues its asynq
// task (ARGV[5], AsynqTask, in the queue ARGV[6]) unless this
// notification was already handed to this sink.
//
// The task is queued first: a script stopped by an error keeps what it
// wrote, so if asynq's keys refuse the task, nothing is written and a
// later dispatch tries again.
var EnqueueNotifyScript = redis.NewScript(asynqEnqueueLua + `
local d = redis.call('GET', KEYS[1])
if d then
  -- sent twice (a retry after a broken connection): the delivery is this job's
  if d == ARGV[1] then return 1 end
  return 0
end
asynqEnqueue(ARGV[6], ARGV[1], ARGV[5], redis.call('TIME'))
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
`)
