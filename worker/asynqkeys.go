package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// This file is where the worker moves tasks between asynq's own lists
// (v0.26.0, internal/base), whose keys internal/keyspace pins, and where
// it answers asynq's done for a task a job's end already acknowledged.
// asynqkeys_test.go checks them against a live asynq server and fails
// loudly if a future asynq changes them.

var (
	asynqActiveKey     = keyspace.AsynqActiveKey
	asynqLeaseKey      = keyspace.AsynqLeaseKey
	asynqPendingKey    = keyspace.AsynqPendingKey
	asynqTaskKeyPrefix = keyspace.AsynqTaskKeyPrefix
)

// reclaimScript moves every active task of a queue back to pending, as
// asynq's own requeue does (LREM active, ZREM lease, RPUSH pending, state
// pending), without counting a retry.
var reclaimScript = redis.NewScript(`
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call('LREM', KEYS[1], 0, id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('RPUSH', KEYS[3], id)
  redis.call('HSET', ARGV[1] .. id, 'state', 'pending')
end
return ids
`)

// strandedScript moves back to pending, as reclaimScript does, the active
// tasks of a queue whose asynq lease (a score in Unix seconds) ran out
// before ARGV[2], except those named in ARGV[3…] (running here).
var strandedScript = redis.NewScript(`
local skip = {}
for i = 3, #ARGV do skip[ARGV[i]] = true end
local moved = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local exp = redis.call('ZSCORE', KEYS[2], id)
  if exp and tonumber(exp) < tonumber(ARGV[2]) and not skip[id] then
    redis.call('LREM', KEYS[1], 0, id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('RPUSH', KEYS[3], id)
    redis.call('HSET', ARGV[1] .. id, 'state', 'pending')
    moved[#moved+1] = id
  end
end
return moved
`)

// reclaimOrphans requeues the tasks left active in this node's queue by a
// process of the same node that died. It runs at start, before this
// process takes any task, holding the data dir's instance lock and the
// stores' leases: nothing else can be running them. asynq alone would
// wait for the 30 s lease and its recoverer (every 60 s): 60–120 s.
// Their records, still active under the dead process's run, read retry
// (reason interrupted, with job.retrying), so that the attempt that runs
// them again, with the same attempt number since asynq counted no retry,
// may start.
func (w *Worker) reclaimOrphans(ctx context.Context, queue string) ([]string, error) {
	ids, err := reclaimScript.Run(ctx, w.rdb,
		[]string{asynqActiveKey(queue), asynqLeaseKey(queue), asynqPendingKey(queue)},
		asynqTaskKeyPrefix(queue)).StringSlice()
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("worker: reclaim orphaned tasks of %s: %w", queue, err)
	}
	return ids, w.requeued(ctx, ids, "interrupted: the node's previous process stopped while running it")
}

// reclaimStranded requeues the tasks of queue that asynq left active with
// an expired lease (on Redis's clock) and that no handler of this process
// runs: a handler that returned while Redis refused writes (a failover, a
// primary without its replicas) leaves its task active when asynq's move
// to done or retry keeps failing until the lease runs out, and asynq's own
// recoverer would take up to 90 s more to notice. The reconciler calls it
// every pass. A process stopped for longer than the lease (30 s) may still
// run one: the attempt guards make the second start, or the first's end,
// a no-op.
func (w *Worker) reclaimStranded(ctx context.Context, queue string) ([]string, error) {
	now, err := w.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("worker: reclaim stranded tasks of %s: %w", queue, err)
	}
	args := []any{asynqTaskKeyPrefix(queue), now.Unix()}
	w.mu.Lock()
	for id := range w.running {
		args = append(args, id)
	}
	w.mu.Unlock()
	ids, err := strandedScript.Run(ctx, w.rdb,
		[]string{asynqActiveKey(queue), asynqLeaseKey(queue), asynqPendingKey(queue)}, args...).StringSlice()
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("worker: reclaim stranded tasks of %s: %w", queue, err)
	}
	return ids, w.requeued(ctx, ids, "stranded: asynq could not settle the task while Redis refused writes, and its lease ran out")
}

// requeued marks the records of requeued tasks that were active as retry
// (reason interrupted, with job.retrying and why), so that the attempt
// that runs them again, with the same attempt number since asynq counted
// no retry, may start.
func (w *Worker) requeued(ctx context.Context, ids []string, why string) error {
	for _, id := range ids {
		rec, err := w.jobs.Get(ctx, id)
		if errors.Is(err, jobs.ErrUnknownJob) {
			continue
		}
		if err != nil {
			return fmt.Errorf("worker: reclaim orphaned job %s: %w", id, err)
		}
		ch := keyspace.Change{Op: keyspace.NewOp("orphan"), HSet: map[string]any{"state": string(jobs.StateRetry), "reason": "interrupted"}}
		ch.AddEvent(w.cfg.Jobs.EventsMaxLen, jobs.Event{Type: jobs.EventJobRetrying, JobID: id, Kind: rec.Kind,
			Store: rec.Store, Node: w.cfg.Node, Trigger: rec.Trigger, Actor: rec.Actor, Attempt: rec.Attempts, MaxRetry: rec.MaxRetry,
			Error: why, At: time.Now().UTC()})
		if _, err := jobsdb.Apply(ctx, w.rdb, id, keyspace.ActiveGuard(), ch); err != nil {
			return fmt.Errorf("worker: reclaim orphaned job %s: %w", id, err)
		}
	}
	return nil
}

// A job's end acknowledges its asynq task in the same script
// (keyspace.AsynqAck): it does what asynq's done would, in the same
// write as the record's end, the event and the history entry. asynq then
// calls its own done for the task as soon as the handler returns; the
// worker gives asynq a client (asynqClient) that answers that one call
// itself when the end already did its work, so a successful job costs
// one round trip fewer, and there is no moment at which the job has
// ended but its task is still active.
//
// This leans on asynq v0.26.0's done script, which
// keyspace.AsynqDoneScript copies: TestAsynqDoneScript fails if a future
// asynq changes it. Were it to change anyway, nothing would match: asynq's
// done would reach Redis, find the task gone and log that it could not
// remove it, until the task's lease ran out; no job would be run twice
// or lost.

// ackedTasks are the task hashes (keyspace.AsynqAck.TaskKey) whose job's
// end acknowledged them and whose asynq done has not been called yet.
type ackedTasks struct {
	mu sync.Mutex
	m  map[string]time.Time // task key -> when acknowledged
}

// ackedMaxAge bounds how long an acknowledgement waits for asynq's done,
// which comes right after the handler returns unless asynq gave the task
// up first (its lease or deadline ran out): such entries are dropped.
const ackedMaxAge = time.Minute

func (a *ackedTasks) add(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.m == nil {
		a.m = map[string]time.Time{}
	}
	if len(a.m) >= 256 {
		for k, at := range a.m {
			if now.Sub(at) > ackedMaxAge {
				delete(a.m, k)
			}
		}
	}
	a.m[key] = now
}

// take reports whether key was acknowledged, and forgets it.
func (a *ackedTasks) take(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.m[key]; !ok {
		return false
	}
	delete(a.m, key)
	return true
}

// asynqClient is the worker's Redis client as asynq's server gets it.
type asynqClient struct {
	redis.UniversalClient
	acked *ackedTasks
}

var asynqDoneSHA = keyspace.AsynqDoneScript.Hash()

// EvalSha answers asynq's done for a task already acknowledged, as
// Redis would have had the task still been active ("OK"); every other
// script goes to Redis.
func (c asynqClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if sha == asynqDoneSHA && len(keys) == 5 && c.acked.take(keys[2]) {
		cmd := redis.NewCmd(ctx, "evalsha", sha, len(keys))
		cmd.SetVal("OK")
		return cmd
	}
	return c.UniversalClient.EvalSha(ctx, sha, keys, args...)
}

// ackFor is what a successful attempt's end acknowledges: its asynq task
// (from asynq's handler context), or nil when the end must leave the
// task to asynq: when a job's end must first be confirmed on replicas
// (Jobs.MinReplicas), asynq keeps the task until it is.
func (w *Worker) ackFor(ctx context.Context) *keyspace.AsynqAck {
	if w.cfg.Jobs.MinReplicas > 0 {
		return nil
	}
	queue, ok1 := asynq.GetQueueName(ctx)
	id, ok2 := asynq.GetTaskID(ctx)
	if !ok1 || !ok2 {
		return nil
	}
	return &keyspace.AsynqAck{Queue: queue, TaskID: id, At: time.Now()}
}
