package jobsdb

import (
	"context"
	"fmt"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// Cancel ends a job for good. The record is marked canceled first (with
// its locks released, job.canceled and its history entry, atomically),
// then a task that has not started is removed from asynq, and a running
// one is told to stop: its handler's context is cancelled and the store is
// released when it returns. Any later attempt of the task exits without
// running. asynq's own CancelProcessing is not used: it turns a cancel
// into a retry whatever the handler returns. With
// ClientConfig.MinReplicas, the canceled state is confirmed on that many
// replicas first (see confirm), or the error wraps ErrUnconfirmed.
func (c *Client) Cancel(ctx context.Context, id, actor string) (jobs.Record, error) {
	rec, err := c.Get(ctx, id)
	if err != nil {
		return rec, err
	}
	if err := rec.Cancelable(); err != nil {
		return rec, err
	}
	now := time.Now().UTC()
	reason := "canceled by " + actor
	ch := keyspace.Change{
		Op:       keyspace.NewOp("cancel"),
		Publish:  []keyspace.Message{{Channel: keyspace.CancelChannel, Payload: id}},
		ReadBack: true,
	}
	ch.End(rec, jobs.Terminal{State: jobs.StateCanceled, Reason: reason, At: now,
		Event:   jobs.Event{Actor: actor, Attempt: rec.Attempts},
		History: jobs.HistoryEntry{Reason: reason}}, c.cfg)
	// Sent again after a lost answer, the cancel finds its own op on the
	// record (Replayed): it is the cancel that ended the job, not a 409.
	// A restore is canceled only exactly as it was read, not started: one
	// that started meanwhile runs to its end.
	guard := keyspace.LiveGuard()
	if rec.Kind.Exclusive() {
		guard = keyspace.ObservedGuard(rec)
	}
	res, err := Apply(ctx, c.rdb, id, guard, ch)
	if err != nil {
		return rec, err
	}
	if !res.OK {
		if err := res.Record.Cancelable(); err != nil {
			return res.Record, err
		}
		return res.Record, fmt.Errorf("%w: job %s is %s", jobs.ErrFinished, id, res.Prior)
	}
	// With MinReplicas, the cancel is confirmed before anyone is told: a
	// cancel a failover loses would let the job run. Unconfirmed, the task
	// is left alone (the record, canceled on the primary, stops it); a
	// cancel sent again finds the job canceled (409 job_finished) unless a
	// failover lost it, and then cancels it again.
	if err := confirm(ctx, c.rdb, c.cfg.MinReplicas, c.cfg.MinReplicasTimeout, []string{id}, true); err != nil {
		return res.Record, fmt.Errorf("job %s is canceled on the Redis primary, which may lose that in a failover: %w", id, err)
	}
	// A task still waiting in asynq goes; an active one cannot be deleted,
	// and its worker stops it on the cancel message.
	_ = c.insp.DeleteTask(rec.Queue, id)
	return res.Record, nil
}
