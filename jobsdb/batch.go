package jobsdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// batchChunk is how many stores one batch script enqueues: the script's
// keys and arguments, and the time Redis spends in it (a few ms), stay
// bounded however many stores there are. A variable for the tests.
var batchChunk = 500

// EnqueueBatch enqueues one job of req.Kind on every store (StoresKey)
// under a new batch id, or finds the equal job already in flight, in
// chunks of batchChunk stores in the stores' name order. Each chunk's jobs
// are recorded (record, locks, job.enqueued), queued in asynq and listed
// under the batch key in one atomic script, so a chunk is never half
// recorded, and no job is recorded without its task; a store forgotten
// since the list was read is left out. When a chunk's script fails, the
// later chunks are not sent, and the error names the batch and how many
// stores it did not reach. Restores are not batched: each store's needs
// its own backup.
//
// It costs one script per chunk, plus one round trip for the store list.
// The answer keeps the first req.List jobs (Batch.Add).
//
// With ClientConfig.MinReplicas at least 1, one more round trip per chunk
// confirms it on that many replicas, every job's record and task (see
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
	// From here the batch runs to its end even if the caller goes away
	// (as Enqueue does).
	ctx = context.WithoutCancel(ctx)
	for n, start := 0, 0; start < len(stores); n, start = n+1, start+batchChunk {
		chunk := stores[start:min(start+batchChunk, len(stores))]
		got, err := c.enqueueChunk(ctx, b.ID, n, req, chunk)
		for _, e := range got {
			b.Add(e, req.List)
		}
		var stop *stoppedAt
		switch {
		case errors.As(err, &stop):
			at := start + slices.Index(chunk, stop.store)
			return b, fmt.Errorf("batch %s: %w; nothing of its job was written, and the %d stores after it were not asked for",
				b.ID, err, len(stores)-at-1)
		case err != nil:
			left := len(stores) - start - len(chunk)
			return b, fmt.Errorf("batch %s: %w; %d more stores (after %s) were not asked for", b.ID, err, left, chunk[len(chunk)-1])
		}
	}
	return b, nil
}

// enqueueChunk enqueues the batch's chunk number n, over stores: one
// script, then the confirmation. It returns the chunk's jobs in the
// stores' order, also when their confirmation fails (the batch lists
// them).
func (c *Client) enqueueChunk(ctx context.Context, batch string, n int, req jobs.BatchRequest, stores []string) ([]jobs.Enqueued, error) {
	now := time.Now().UTC()
	recs := make([]jobs.Record, len(stores))
	keys := []string{keyspace.EventsStream, keyspace.StoresKey, keyspace.BatchKey(batch), keyspace.BatchChunksKey(batch)}
	argv := []any{c.cfg.EventsMaxLen, jobs.NodeQueue(""), keyspace.InFlightKey(""), keyspace.RecordKey(""), c.cfg.RecordRetention.Milliseconds(), n}
	for i, st := range stores {
		p := jobs.Payload{JobID: jobs.NewID(), Kind: req.Kind, Store: st, Trigger: req.Trigger, Actor: req.Actor, BatchID: batch, Params: req.Params}
		rec, task, ev, err := c.newJob(p, now)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
		fields := rec.AppendFields(nil, "node", "queue")
		keys = append(keys, keyspace.LockKey(p), keyspace.RestoreLockKey(st), keyspace.RecordKey(rec.ID))
		argv = append(append(argv, rec.ID, st, ev, task, len(fields)), fields...)
	}
	out, err := keyspace.EnqueueBatchScript.Run(ctx, c.rdb, keys, argv...).Slice()
	if err != nil {
		return nil, unavailable(err)
	}
	status, _ := out[0].(string)
	var got []jobs.Enqueued
	var failed *stoppedAt
	switch status {
	case "ok":
		for i, o := range out[1:] {
			res := answerStrings(o)
			switch res[0] {
			case "error":
				failed = &stoppedAt{store: res[1], msg: res[2]}
			case "new":
				recs[i].Node = res[1]
				recs[i].Queue = jobs.NodeQueue(res[1])
				got = append(got, jobs.Enqueued{Record: recs[i]})
			case "dup":
				held, err := jobs.RecordFromHash(pairs(res[2:]))
				if err != nil {
					return nil, fmt.Errorf("job %s holding the lock: %w", res[1], err)
				}
				got = append(got, jobs.Enqueued{Record: held, Deduplicated: true})
			case "gone": // forgotten since the list was read
			default:
				return nil, fmt.Errorf("unexpected answer %q for store %s", res[0], stores[i])
			}
		}
	case "replayed": // a copy of this call already wrote the chunk
		if st, _ := out[1].(string); st != "" {
			msg, _ := out[2].(string)
			failed = &stoppedAt{store: st, msg: msg}
		}
		byID, byStore := map[string]jobs.Record{}, map[string]jobs.Record{}
		for _, o := range out[3:] {
			h := answerStrings(o)
			if len(h) == 0 {
				continue // a held job's record expired since
			}
			r, err := jobs.RecordFromHash(pairs(h))
			if err != nil {
				return nil, err
			}
			byID[r.ID], byStore[r.Store] = r, r
		}
		for i, st := range stores {
			if mine, ok := byID[recs[i].ID]; ok {
				// Queued with its record; it may be terminal by now: final.
				got = append(got, jobs.Enqueued{Record: mine})
			} else if held, ok := byStore[st]; ok {
				got = append(got, jobs.Enqueued{Record: held, Deduplicated: true})
			}
		}
	default:
		return nil, fmt.Errorf("unexpected answer %q", status)
	}
	if failed != nil {
		return got, failed
	}
	ids := make([]string, len(got))
	for i, e := range got {
		ids[i] = e.Record.ID
	}
	if err := c.confirmAccepted(ctx, ids...); err != nil {
		return got, fmt.Errorf("it may or may not have been accepted: %d of its jobs are recorded and queued on the Redis primary, "+
			"which may lose them in a failover; the same request sent again returns them while they are in flight: %w", len(ids), err)
	}
	return got, nil
}

// stoppedAt is a chunk's script stopped at the job of store, which it
// could not write (msg: Redis's error).
type stoppedAt struct{ store, msg string }

func (s *stoppedAt) Error() string {
	return "store " + s.store + ": its job could not be queued: " + s.msg
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
