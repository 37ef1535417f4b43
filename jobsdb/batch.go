package jobsdb

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// batchChunk is how many stores one batch script enqueues: the script's
// keys and arguments, and the time Redis spends in it (a few ms), stay
// bounded however many stores there are. A variable for the tests.
var batchChunk = 500

// handOverWorkers is how many asynq enqueues a batch has in flight at
// once.
const handOverWorkers = 8

// EnqueueBatch enqueues one job of req.Kind on every store (StoresKey)
// under a new batch id, or finds the equal job already in flight, in
// chunks of batchChunk stores in the stores' name order. Each chunk's jobs
// are recorded (record, locks, job.enqueued) and listed under the batch
// key in one atomic script, so a chunk is never half recorded; a store
// forgotten since the list was read is left out. The chunk's tasks are
// then handed to asynq (handOverWorkers at a time: asynq's own enqueue
// cannot join the script); when a hand-over fails, every job of the chunk
// not handed over is abandoned (failed, reason "enqueue failed", each with
// its job.failed and history entry), so each job of the batch ends up
// queued or failed, the later chunks are not sent, and the error names the
// batch and how many stores it did not reach. (Whatever the abandon could
// not reach, Redis being down, the reconciler settles after its grace.)
// Restores are not batched: each store's needs its own backup.
//
// Per chunk it costs one script and one asynq round trip per new job
// (handOverWorkers of them at once), plus one round trip for the store
// list. The answer keeps the first req.List jobs (Batch.Add).
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
		if err != nil {
			left := len(stores) - start - len(chunk)
			return b, fmt.Errorf("batch %s: %w; %d more stores (after %s) were not asked for", b.ID, err, left, chunk[len(chunk)-1])
		}
	}
	return b, nil
}

// enqueueChunk enqueues the batch's chunk number n, over stores: one
// script, then the hand-overs, then the confirmation. It returns the
// chunk's jobs in the stores' order, also when it fails after the script
// (the batch lists them; the failed hand-overs are abandoned).
func (c *Client) enqueueChunk(ctx context.Context, batch string, n int, req jobs.BatchRequest, stores []string) ([]jobs.Enqueued, error) {
	now := time.Now().UTC()
	recs := make([]jobs.Record, len(stores))
	tasks := make([][]byte, len(stores))
	keys := []string{keyspace.EventsStream, keyspace.StoresKey, keyspace.BatchKey(batch), keyspace.BatchChunksKey(batch)}
	argv := []any{c.cfg.EventsMaxLen, jobs.NodeQueue(""), keyspace.InFlightKey(""), keyspace.RecordKey(""), c.cfg.RecordRetention.Milliseconds(), n}
	for i, st := range stores {
		p := jobs.Payload{JobID: jobs.NewID(), Kind: req.Kind, Store: st, Trigger: req.Trigger, Actor: req.Actor, BatchID: batch, Params: req.Params}
		rec, task, ev, err := c.newJob(p, now)
		if err != nil {
			return nil, err
		}
		recs[i], tasks[i] = rec, task
		fields := rec.AppendFields(nil, "node", "queue")
		keys = append(keys, keyspace.LockKey(p), keyspace.RestoreLockKey(st), keyspace.RecordKey(rec.ID))
		argv = append(append(argv, rec.ID, st, ev, len(fields)), fields...)
	}
	out, err := keyspace.EnqueueBatchScript.Run(ctx, c.rdb, keys, argv...).Slice()
	if err != nil {
		return nil, unavailable(err)
	}
	status, _ := out[0].(string)
	var got []jobs.Enqueued
	var hand []int // in got: the jobs to hand to asynq
	var handTasks [][]byte
	switch status {
	case "ok":
		for i, o := range out[1:] {
			res := answerStrings(o)
			switch res[0] {
			case "new":
				recs[i].Node = res[1]
				recs[i].Queue = jobs.NodeQueue(res[1])
				got = append(got, jobs.Enqueued{Record: recs[i]})
				hand, handTasks = append(hand, len(got)-1), append(handTasks, tasks[i])
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
		byID, byStore := map[string]jobs.Record{}, map[string]jobs.Record{}
		for _, o := range out[1:] {
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
				got = append(got, jobs.Enqueued{Record: mine})
				if mine.State == jobs.StatePending { // else settled meanwhile: final
					hand, handTasks = append(hand, len(got)-1), append(handTasks, tasks[i])
				}
			} else if held, ok := byStore[st]; ok {
				got = append(got, jobs.Enqueued{Record: held, Deduplicated: true})
			}
		}
	default:
		return nil, fmt.Errorf("unexpected answer %q", status)
	}
	handRecs := make([]jobs.Record, len(hand))
	for i, g := range hand {
		handRecs[i] = got[g].Record
	}
	if left, err := c.handOverAll(ctx, handRecs, handTasks); err != nil {
		c.abandonAll(left, err)
		return got, unavailable(fmt.Errorf("%w (the %d jobs of its chunk not handed over were abandoned)", err, len(left)))
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

// handOverAll hands recs' tasks to asynq, handOverWorkers at a time. On
// the first failure it stops starting new ones and returns it, with
// every job not handed over: the failed ones and those never tried.
func (c *Client) handOverAll(ctx context.Context, recs []jobs.Record, tasks [][]byte) ([]jobs.Record, error) {
	var (
		next     atomic.Int64
		stop     atomic.Bool
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	handed := make([]bool, len(recs))
	for range min(handOverWorkers, len(recs)) {
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(recs) {
					return
				}
				if err := c.handOver(ctx, recs[i], tasks[i]); err != nil {
					stop.Store(true)
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("hand job %s to asynq: %w", recs[i].ID, err)
					}
					mu.Unlock()
					continue
				}
				handed[i] = true
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		return nil, nil
	}
	var left []jobs.Record
	for i, r := range recs {
		if !handed[i] {
			left = append(left, r)
		}
	}
	return left, firstErr
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
