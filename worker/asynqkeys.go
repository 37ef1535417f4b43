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

// This file is the one place that knows asynq's internal Redis keys
// (v0.26.0, internal/base). asynqkeys_test.go checks them against a live
// asynq server and fails loudly if a future asynq changes them.

func asynqActiveKey(queue string) string  { return "asynq:{" + queue + "}:active" }
func asynqLeaseKey(queue string) string   { return "asynq:{" + queue + "}:lease" }
func asynqPendingKey(queue string) string { return "asynq:{" + queue + "}:pending" }
func asynqTaskKeyPrefix(queue string) string {
	return "asynq:{" + queue + "}:t:"
}

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
	for _, id := range ids {
		rec, err := w.jobs.Get(ctx, id)
		if errors.Is(err, jobs.ErrUnknownJob) {
			continue
		}
		if err != nil {
			return ids, fmt.Errorf("worker: reclaim orphaned job %s: %w", id, err)
		}
		ch := keyspace.Change{Op: keyspace.NewOp("orphan"), HSet: map[string]any{"state": string(jobs.StateRetry), "reason": "interrupted"}}
		ch.AddEvent(w.cfg.Jobs.EventsMaxLen, jobs.Event{Type: jobs.EventJobRetrying, JobID: id, Kind: rec.Kind,
			Store: rec.Store, Node: w.cfg.Node, Trigger: rec.Trigger, Actor: rec.Actor, Attempt: rec.Attempts, MaxRetry: rec.MaxRetry,
			Error: "interrupted: the node's previous process stopped while running it", At: time.Now().UTC()})
		if _, err := jobsdb.Apply(ctx, w.rdb, id, keyspace.ActiveGuard(), ch); err != nil {
			return ids, fmt.Errorf("worker: reclaim orphaned job %s: %w", id, err)
		}
	}
	return ids, nil
}
