package jobsdb

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// deliveryMemory is how long a delivery is remembered, so that an outbox
// entry dispatched twice (a crash between enqueue and acknowledgement)
// is delivered once.
const deliveryMemory = 24 * time.Hour

// EnqueueNotify makes a notify job delivering n to the named sink, unless
// one was made already; it reports whether it made one. The payload names
// the sink: secrets stay in configuration, never in tasks.
//
// With ClientConfig.MinReplicas at least 1, the job (or the one made
// already) is then confirmed on that many replicas (see confirm); when
// fewer confirm in time the error wraps ErrUnconfirmed, and the outbox
// entry stays to be dispatched again: the delivery key makes the repeat
// find the job instead of making a second one, and confirms it in turn.
func (c *Client) EnqueueNotify(ctx context.Context, n jobs.Notification, sink string) (jobs.Record, bool, error) {
	body, err := json.Marshal(n)
	if err != nil {
		return jobs.Record{}, false, err
	}
	p := jobs.Payload{JobID: jobs.NewID(), Kind: jobs.KindNotify, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, Sink: sink, Notification: body}
	now := time.Now().UTC()
	rec := jobs.Record{ID: p.JobID, Kind: jobs.KindNotify, Queue: jobs.NotifyQueue, State: jobs.StatePending, Trigger: p.Trigger, Actor: p.Actor,
		MaxRetry: c.cfg.MaxRetry[jobs.KindNotify], Errors: []jobs.AttemptError{}, EnqueuedAt: now}
	task, err := c.asynqTask(rec, p)
	if err != nil {
		return jobs.Record{}, false, err
	}
	ev, _ := json.Marshal(jobs.Event{Type: jobs.EventJobEnqueued, JobID: rec.ID, Kind: jobs.KindNotify, Store: n.Store, Trigger: rec.Trigger,
		Actor: rec.Actor, MaxRetry: rec.MaxRetry, At: now})
	argv := rec.AppendFields([]any{rec.ID, int64(deliveryMemory / time.Second), c.cfg.EventsMaxLen, string(ev), task, rec.Queue})
	keys := []string{keyspace.DeliveryKey(n.ID, sink), keyspace.RecordKey(rec.ID), keyspace.EventsStream, keyspace.InFlightKey(jobs.NotifyQueue)}
	made, err := keyspace.EnqueueNotifyScript.Run(ctx, c.rdb, keys, argv...).Int()
	if err != nil {
		return jobs.Record{}, false, unavailable(err)
	}
	if made == 0 {
		// Made by an earlier dispatch, whose confirmation may have failed:
		// the job is not named here, but what the primary holds is
		// confirmed, and it holds the delivery key.
		if err := c.confirmAccepted(ctx); err != nil {
			return jobs.Record{}, false, fmt.Errorf("notification %s to %s, queued by an earlier dispatch: %w", n.ID, sink, err)
		}
		return jobs.Record{}, false, nil
	}
	if err := c.confirmAccepted(ctx, rec.ID); err != nil {
		// Not undone: the job is in place on the primary and may run.
		return jobs.Record{}, false, fmt.Errorf("notify job %s (notification %s to %s) may or may not have been queued: %w", rec.ID, n.ID, sink, err)
	}
	return rec, true, nil
}
