package jobsdb

import (
	"context"
	"fmt"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// EnqueueBatch enqueues one job of req.Kind on every store (StoresKey)
// under a new batch id, or finds the equal job already in flight. Every
// job is recorded (record, locks, job.enqueued) and listed under the batch
// key in one atomic script, so a failure never leaves a batch half
// recorded: either the batch exists with all its jobs or nothing was
// written. The tasks are then handed to asynq one by one (asynq's own
// enqueue cannot join the script); when one hand-over fails, that job and
// every job not yet handed over are abandoned (failed, reason "enqueue
// failed", each with its job.failed and history entry), so each job of the
// batch still ends up queued or failed, and the error names the batch.
// (Whatever the abandon could not reach, Redis being down, the reconciler
// settles after its grace.) Restores are not batched: each store's needs
// its own backup.
//
// It costs three round trips and one per new job: the store list, the
// script, asynq's enqueues.
//
// With ClientConfig.MinReplicas at least 1, one more round trip confirms
// the whole batch on that many replicas, every job's record and task (see
// confirm). When fewer confirm in time, the error wraps ErrUnconfirmed
// (so jobs.ErrUnavailable: 503) and says the batch may or may not have
// been accepted: its jobs are recorded and queued on the primary. Sending
// the same request again makes a new batch whose jobs are the same ones,
// each deduplicated by its lock while it is in flight, and confirms them.
func (c *Client) EnqueueBatch(ctx context.Context, req jobs.BatchRequest) (jobs.Batch, error) {
	if !req.Kind.Maintenance() || req.Kind == jobs.KindRestore {
		return jobs.Batch{}, fmt.Errorf("%w: %q is not a batchable job kind", jobs.ErrBadPayload, req.Kind)
	}
	b := jobs.Batch{ID: jobs.NewBatchID(), Jobs: []jobs.Enqueued{}}
	stores, err := StoreNames(ctx, c.rdb)
	if err != nil || len(stores) == 0 {
		return b, err
	}
	now := time.Now().UTC()
	recs := make([]jobs.Record, len(stores))
	tasks := make([][]byte, len(stores))
	keys := []string{keyspace.EventsStream, keyspace.StoresKey, keyspace.BatchKey(b.ID)}
	argv := []any{c.cfg.EventsMaxLen, jobs.NodeQueue(""), keyspace.InFlightKey(""), keyspace.RecordKey(""), c.cfg.RecordRetention.Milliseconds()}
	for i, st := range stores {
		p := jobs.Payload{JobID: jobs.NewID(), Kind: req.Kind, Store: st, Trigger: req.Trigger, Actor: req.Actor, BatchID: b.ID, Params: req.Params}
		rec, task, ev, err := c.newJob(p, now)
		if err != nil {
			return jobs.Batch{}, err
		}
		recs[i], tasks[i] = rec, task
		fields := rec.AppendFields(nil, "node", "queue")
		keys = append(keys, keyspace.LockKey(p), keyspace.RestoreLockKey(st), keyspace.RecordKey(rec.ID))
		argv = append(append(argv, rec.ID, st, ev, len(fields)), fields...)
	}
	// From here the batch runs to its end even if the caller goes away
	// (as Enqueue does).
	ctx = context.WithoutCancel(ctx)
	out, err := keyspace.EnqueueBatchScript.Run(ctx, c.rdb, keys, argv...).Slice()
	if err != nil {
		return jobs.Batch{}, unavailable(err)
	}
	status, _ := out[0].(string)
	type handOff struct {
		job  int // in b.Jobs
		task []byte
	}
	var hand []handOff
	switch status {
	case "unknown":
		return jobs.Batch{}, fmt.Errorf("%w %q: no node owns it", jobs.ErrUnknownStore, out[1])
	case "ok":
		for i, o := range out[1:] {
			res := answerStrings(o)
			switch res[0] {
			case "new":
				recs[i].Node = res[1]
				recs[i].Queue = jobs.NodeQueue(res[1])
				b.Jobs = append(b.Jobs, jobs.Enqueued{Record: recs[i]})
				hand = append(hand, handOff{len(b.Jobs) - 1, tasks[i]})
			case "dup":
				held, err := jobs.RecordFromHash(pairs(res[2:]))
				if err != nil {
					return jobs.Batch{}, fmt.Errorf("batch %s: job %s holding the lock: %w", b.ID, res[1], err)
				}
				b.Jobs = append(b.Jobs, jobs.Enqueued{Record: held, Deduplicated: true})
			default:
				return jobs.Batch{}, fmt.Errorf("batch %s: unexpected answer %q for store %s", b.ID, res[0], stores[i])
			}
		}
	case "replayed": // a copy of this call already wrote the batch
		byID, byStore := map[string]jobs.Record{}, map[string]jobs.Record{}
		for _, o := range out[1:] {
			h := answerStrings(o)
			if len(h) == 0 {
				continue // a held job's record expired since
			}
			r, err := jobs.RecordFromHash(pairs(h))
			if err != nil {
				return jobs.Batch{}, fmt.Errorf("batch %s: %w", b.ID, err)
			}
			byID[r.ID], byStore[r.Store] = r, r
		}
		for i, st := range stores {
			if mine, ok := byID[recs[i].ID]; ok {
				b.Jobs = append(b.Jobs, jobs.Enqueued{Record: mine})
				if mine.State == jobs.StatePending { // else settled meanwhile: final
					hand = append(hand, handOff{len(b.Jobs) - 1, tasks[i]})
				}
			} else if held, ok := byStore[st]; ok {
				b.Jobs = append(b.Jobs, jobs.Enqueued{Record: held, Deduplicated: true})
			}
		}
	default:
		return jobs.Batch{}, fmt.Errorf("batch %s: unexpected answer %q", b.ID, status)
	}
	for n, h := range hand {
		rec := b.Jobs[h.job].Record
		if err := c.handOver(ctx, rec, h.task); err != nil {
			rest := []jobs.Record{rec}
			for _, later := range hand[n+1:] {
				rest = append(rest, b.Jobs[later.job].Record)
			}
			c.abandonAll(rest, err)
			return b, unavailable(fmt.Errorf("batch %s: hand job %s to asynq (it and the %d jobs after it were abandoned): %w",
				b.ID, rec.ID, len(rest)-1, err))
		}
	}
	ids := make([]string, len(b.Jobs))
	for i, e := range b.Jobs {
		ids[i] = e.Record.ID
	}
	if err := c.confirmAccepted(ctx, ids...); err != nil {
		return jobs.Batch{}, fmt.Errorf("batch %s may or may not have been accepted: its %d jobs are recorded and queued on the Redis primary, "+
			"which may lose them in a failover; the same request sent again returns them while they are in flight: %w", b.ID, len(ids), err)
	}
	return b, nil
}

// answerStrings returns a script's nested answer as strings.
func answerStrings(v any) []string {
	vs, _ := v.([]any)
	out := make([]string, len(vs))
	for i, x := range vs {
		out[i], _ = x.(string)
	}
	return out
}
