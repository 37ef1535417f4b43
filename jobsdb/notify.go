package jobsdb

import (
	"context"
	"encoding/json"
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
func (c *Client) EnqueueNotify(ctx context.Context, n jobs.Notification, sink string) (jobs.Record, bool, error) {
	body, err := json.Marshal(n)
	if err != nil {
		return jobs.Record{}, false, err
	}
	p := jobs.Payload{JobID: jobs.NewID(), Kind: jobs.KindNotify, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, Sink: sink, Notification: body}
	task, err := p.Encode()
	if err != nil {
		return jobs.Record{}, false, err
	}
	now := time.Now().UTC()
	rec := jobs.Record{ID: p.JobID, Kind: jobs.KindNotify, Queue: jobs.NotifyQueue, State: jobs.StatePending, Trigger: p.Trigger, Actor: p.Actor,
		MaxRetry: c.cfg.MaxRetry[jobs.KindNotify], Errors: []jobs.AttemptError{}, EnqueuedAt: now}
	ev, _ := json.Marshal(jobs.Event{Type: jobs.EventJobEnqueued, JobID: rec.ID, Kind: jobs.KindNotify, Store: n.Store, Trigger: rec.Trigger,
		Actor: rec.Actor, MaxRetry: rec.MaxRetry, At: now})
	argv := rec.AppendFields([]any{rec.ID, int64(deliveryMemory / time.Second), c.cfg.EventsMaxLen, string(ev)})
	keys := []string{keyspace.DeliveryKey(n.ID, sink), keyspace.RecordKey(rec.ID), keyspace.EventsStream, keyspace.InFlightKey(jobs.NotifyQueue)}
	made, err := keyspace.EnqueueNotifyScript.Run(ctx, c.rdb, keys, argv...).Int()
	if err != nil {
		return jobs.Record{}, false, unavailable(err)
	}
	if made == 0 {
		return jobs.Record{}, false, nil
	}
	if err := c.toAsynq(ctx, rec, task); err != nil {
		c.rdb.Del(context.WithoutCancel(ctx), keyspace.DeliveryKey(n.ID, sink)) // let a later dispatch retry it
		return jobs.Record{}, false, err
	}
	return rec, true, nil
}
