package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"storekeeper/jobs"
)

// reconcileGrace leaves alone a job enqueued so recently that its task may
// not have reached asynq yet (the record is written first).
const reconcileGrace = 10 * time.Second

// reconcile brings the records of this node's unfinished jobs in line with
// what asynq did without running any middleware: a task it archived (its
// recoverer does so when a lease expires on the last attempt; an operator
// can in asynqmon) or that is gone (deleted in asynqmon) ends as failed, with
// its locks released, job.failed and a history entry, so nothing stays
// "active" and no store stays locked. It returns how many it settled.
// It covers this node's queue and the notify queue every node shares
// (settling a job twice is harmless: the change is guarded).
func (w *Worker) reconcile(ctx context.Context, grace time.Duration) (int, error) {
	total := 0
	for _, q := range []string{jobs.NodeQueue(w.cfg.Node), jobs.NotifyQueue} {
		n, err := w.reconcileQueue(ctx, q, grace)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (w *Worker) reconcileQueue(ctx context.Context, queue string, grace time.Duration) (int, error) {
	ids, err := w.rdb.SMembers(ctx, jobs.InFlightKey(queue)).Result()
	if err != nil {
		return 0, err
	}
	insp := asynq.NewInspectorFromRedisClient(w.rdb)
	settled := 0
	for _, id := range ids {
		rec, err := w.jobs.Get(ctx, id)
		if errors.Is(err, jobs.ErrUnknownJob) {
			w.rdb.SRem(ctx, jobs.InFlightKey(queue), id)
			continue
		}
		if err != nil {
			return settled, err
		}
		if rec.State.Terminal() {
			w.rdb.SRem(ctx, jobs.InFlightKey(queue), id)
			continue
		}
		var reason string
		info, err := insp.GetTaskInfo(queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
			if time.Since(rec.EnqueuedAt) < grace {
				continue
			}
			reason = "task is gone from asynq"
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
		now := time.Now().UTC()
		ch := jobs.Change{HSet: map[string]any{"state": string(jobs.StateFailed), "reason": reason, "finished_at": now.Format(time.RFC3339Nano)}}
		ch.Finish(rec, w.cfg.Jobs.RecordRetention)
		ch.AddEntry(jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, jobs.Event{Type: jobs.EventJobFailed, JobID: id, Kind: rec.Kind,
			Store: rec.Store, Node: w.cfg.Node, Trigger: rec.Trigger, Actor: rec.Actor, Attempt: rec.Attempts, MaxRetry: rec.MaxRetry,
			Error: reason, At: now})
		ch.AddEntry(jobs.HistoryStream, w.cfg.Jobs.HistoryMaxLen, jobs.HistoryEntry{JobID: id, Kind: rec.Kind, Store: rec.Store,
			Status: jobs.StatusFailed, Reason: reason, Trigger: rec.Trigger, Actor: rec.Actor, Attempts: rec.Attempts,
			Error: reason, Node: w.cfg.Node, At: now})
		if rec.Kind != jobs.KindNotify {
			ch.Notify(w.failureNote(rec.ID, rec.Kind, rec.Store, rec.Trigger, rec.Actor, rec.Attempts, reason, now))
		}
		res, err := jobs.Apply(ctx, w.rdb, id, jobs.UnlessTerminal, ch)
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
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := w.reconcile(ctx, reconcileGrace); err != nil && ctx.Err() == nil {
			w.log.Warn("reconciling jobs failed", "err", err)
		}
	}
}
