package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// This file is where the worker moves tasks between asynq's own lists
// (v0.26.0, internal/base), whose keys internal/keyspace pins.
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
