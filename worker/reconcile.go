package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// reconcileGrace (Config.ReconcileGrace's default) leaves alone a job
// enqueued so recently that its task may not have reached asynq yet (the
// record is written first). It is measured
// on Redis's clock from the moment the record was written, so neither a
// clock skew between processes nor an enqueue that waited out a Redis
// stall can make it run out early.
const reconcileGrace = 10 * time.Second

// reconcile brings the records of this node's unfinished jobs in line with
// what asynq did without running any middleware: a task it archived (its
// recoverer does so when a lease expires on the last attempt; an operator
// can in asynqmon) or that is gone (deleted in asynqmon, or never handed
// over because its enqueue failed) ends as failed, with its locks
// released, job.failed and a history entry, so nothing stays "active" and
// no store stays locked. It returns how many it settled. It covers this
// node's queue and the notify queue every node shares: each settle is
// guarded by the record exactly as examined (state, run, attempts), so
// two reconcilers, or a job that moves on meanwhile, never make a second
// end.
func (w *Worker) reconcile(ctx context.Context, grace time.Duration) (int, error) {
	total := 0
	for _, q := range []string{jobs.NodeQueue(w.cfg.Node), jobs.NotifyQueue} {
		stranded, err := w.reclaimStranded(ctx, q)
		if err != nil {
			return total, err
		}
		if len(stranded) > 0 {
			w.log.Warn("requeued tasks asynq left active with an expired lease", "queue", q, "jobs", stranded)
		}
		n, err := w.reconcileQueue(ctx, q, grace)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (w *Worker) reconcileQueue(ctx context.Context, queue string, grace time.Duration) (int, error) {
	ids, now, err := jobsdb.InFlightIDs(ctx, w.rdb, queue) // now: Redis's clock, which enq_ms is on
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	insp := asynq.NewInspectorFromRedisClient(w.rdb)
	settled := 0
	for _, id := range ids {
		rec, err := w.jobs.Get(ctx, id)
		if errors.Is(err, jobs.ErrUnknownJob) {
			_ = jobsdb.DropInFlight(ctx, w.rdb, queue, id) // the next pass drops it if this fails
			continue
		}
		if err != nil {
			return settled, err
		}
		if rec.State.Terminal() {
			_ = jobsdb.DropInFlight(ctx, w.rdb, queue, id)
			continue
		}
		var reason string
		notify := rec.Kind != jobs.KindNotify
		info, err := insp.GetTaskInfo(queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
			written := rec.EnqueuedAt
			if rec.EnqueuedMS > 0 {
				written = time.UnixMilli(rec.EnqueuedMS)
			}
			if now.Sub(written) < grace {
				continue
			}
			reason = "task is gone from asynq"
			if rec.State == jobs.StatePending && rec.Attempts == 0 {
				// Deleted before it ran, or its enqueue failed after the
				// record was written (Redis stalled): it never ran.
				reason = "task is gone from asynq: the job never ran"
			}
		case err != nil:
			return settled, err
		case info.State == asynq.TaskStateArchived:
			reason = "asynq archived the task"
			if info.LastErr != "" {
				reason += ": " + info.LastErr
			}
		default:
			continue
		}
		at := w.clock.Now().UTC()
		ch := keyspace.Change{Op: keyspace.NewOp("settle")}
		ch.End(rec, jobs.Terminal{State: jobs.StateFailed, Reason: reason, Error: reason, At: at,
			Event:   jobs.Event{Node: w.cfg.Node, Attempt: rec.Attempts},
			History: jobs.HistoryEntry{Node: w.cfg.Node}}, w.cfg.Jobs)
		if notify {
			ch.Notify(w.failureNote(rec.ID, rec.Kind, rec.Store, rec.Trigger, rec.Actor, rec.Attempts, reason, at))
		}
		res, err := jobsdb.Apply(ctx, w.rdb, id, keyspace.ObservedGuard(rec), ch)
		if err != nil {
			return settled, fmt.Errorf("settle job %s: %w", id, err)
		}
		if res.OK {
			settled++
			w.counters.settledFailed(rec.Kind)
			w.log.Warn("settled a job asynq ended without the worker", "job", id, "reason", reason)
		}
	}
	return settled, nil
}

// reconcileLoop runs reconcile every interval until ctx ends.
func (w *Worker) reconcileLoop(ctx context.Context, every time.Duration) {
	t := w.clock.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		n, err := w.reconcile(ctx, w.cfg.ReconcileGrace)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("reconciling jobs failed", "err", err)
		}
		w.signals.reconciled.Signal(n)
	}
}
