package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// BatchRequest asks for one job of Kind on every store.
type BatchRequest struct {
	Kind    Kind
	Params  Params
	Trigger Trigger
	Actor   string
}

// Batch is the answer to EnqueueBatch: the batch id (BatchKey lists its
// jobs) and one job per store, in the stores' order; a store whose equal
// job was already in flight has that job, Deduplicated.
type Batch struct {
	ID   string
	Jobs []Enqueued
}

// NewBatchID returns a new batch id: time-sortable like a job id, with a
// "b" for the job id's "j".
func NewBatchID() string { return "b" + NewID()[1:] }

// enqueueBatchScript enqueues one job per store (enqueueJob each) and
// lists them all under the batch key, in one atomic step: every job of
// the batch is recorded and listed, or none is. It first checks that every
// store has an owner ('unknown' names the one that has not) before it
// writes anything.
//
// KEYS: the events stream, StoresKey, the batch key, then per job its
// lock, restore lock and record. ARGV: the events' cap, the prefixes of
// queue names, in-flight sets and records, the batch key's TTL in ms, then
// per job its id, store, event, the number of its record's fields and the
// fields.
//
// It is safe to run any number of times: the batch id is new to the call,
// so a run that finds the batch key is a copy of a run that wrote it. It
// writes nothing and answers 'replayed' with the records of the batch's
// jobs as they are now (the caller tells its own from the held ones by
// id), which may be terminal by then.
var enqueueBatchScript = redis.NewScript(enqueueJobLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then
  local r = {'replayed'}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    r[#r+1] = redis.call('HGETALL', ARGV[4] .. id)
  end
  return r
end
local jobs = {}
local a = 6
for k = 4, #KEYS, 3 do
  local n = tonumber(ARGV[a+3])
  local j = {lock = KEYS[k], rlock = KEYS[k+1], rec = KEYS[k+2], id = ARGV[a], store = ARGV[a+1], ev = ARGV[a+2],
    fields = {unpack(ARGV, a+4, a+3+n)}}
  if redis.call('HEXISTS', KEYS[2], j.store) == 0 then return {'unknown', j.store} end
  jobs[#jobs+1] = j
  a = a + 4 + n
end
local r = {'ok'}
local ids = {}
for _, j in ipairs(jobs) do
  local out = enqueueJob(j.lock, j.rlock, j.rec, KEYS[1], KEYS[2], j.id, '0', ARGV[1], j.ev, j.store,
    ARGV[2], ARGV[3], ARGV[4], j.fields)
  r[#r+1] = out
  if out[1] == 'new' then ids[#ids+1] = j.id else ids[#ids+1] = out[2] end
end
for i = 1, #ids, 1000 do -- unpack has a limit
  redis.call('SADD', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return r
`)

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
func (c *Client) EnqueueBatch(ctx context.Context, req BatchRequest) (Batch, error) {
	if !req.Kind.Maintenance() || req.Kind == KindRestore {
		return Batch{}, fmt.Errorf("%w: %q is not a batchable job kind", ErrBadPayload, req.Kind)
	}
	b := Batch{ID: NewBatchID(), Jobs: []Enqueued{}}
	stores, err := StoreNames(ctx, c.rdb)
	if err != nil || len(stores) == 0 {
		return b, err
	}
	now := time.Now().UTC()
	recs := make([]Record, len(stores))
	tasks := make([][]byte, len(stores))
	keys := []string{EventsStream, StoresKey, BatchKey(b.ID)}
	argv := []any{c.cfg.EventsMaxLen, NodeQueue(""), InFlightKey(""), RecordKey(""), c.cfg.RecordRetention.Milliseconds()}
	for i, st := range stores {
		p := Payload{JobID: NewID(), Kind: req.Kind, Store: st, Trigger: req.Trigger, Actor: req.Actor, BatchID: b.ID, Params: req.Params}
		rec, task, ev, err := c.newJob(p, now)
		if err != nil {
			return Batch{}, err
		}
		recs[i], tasks[i] = rec, task
		fields := rec.appendFields(nil, "node", "queue")
		keys = append(keys, LockKey(p), RestoreLockKey(st), RecordKey(rec.ID))
		argv = append(append(argv, rec.ID, st, ev, len(fields)), fields...)
	}
	// From here the batch runs to its end even if the caller goes away
	// (as Enqueue does).
	ctx = context.WithoutCancel(ctx)
	out, err := enqueueBatchScript.Run(ctx, c.rdb, keys, argv...).Slice()
	if err != nil {
		return Batch{}, unavailable(err)
	}
	status, _ := out[0].(string)
	type handOff struct {
		job  int // in b.Jobs
		task []byte
	}
	var hand []handOff
	switch status {
	case "unknown":
		return Batch{}, fmt.Errorf("%w %q: no node owns it", ErrUnknownStore, out[1])
	case "ok":
		for i, o := range out[1:] {
			res := answerStrings(o)
			switch res[0] {
			case "new":
				recs[i].Node = res[1]
				recs[i].Queue = NodeQueue(res[1])
				b.Jobs = append(b.Jobs, Enqueued{Record: recs[i]})
				hand = append(hand, handOff{len(b.Jobs) - 1, tasks[i]})
			case "dup":
				held, err := RecordFromHash(pairs(res[2:]))
				if err != nil {
					return Batch{}, fmt.Errorf("batch %s: job %s holding the lock: %w", b.ID, res[1], err)
				}
				b.Jobs = append(b.Jobs, Enqueued{Record: held, Deduplicated: true})
			default:
				return Batch{}, fmt.Errorf("batch %s: unexpected answer %q for store %s", b.ID, res[0], stores[i])
			}
		}
	case "replayed": // a copy of this call already wrote the batch
		byID, byStore := map[string]Record{}, map[string]Record{}
		for _, o := range out[1:] {
			h := answerStrings(o)
			if len(h) == 0 {
				continue // a held job's record expired since
			}
			r, err := RecordFromHash(pairs(h))
			if err != nil {
				return Batch{}, fmt.Errorf("batch %s: %w", b.ID, err)
			}
			byID[r.ID], byStore[r.Store] = r, r
		}
		for i, st := range stores {
			if mine, ok := byID[recs[i].ID]; ok {
				b.Jobs = append(b.Jobs, Enqueued{Record: mine})
				if mine.State == StatePending { // else settled meanwhile: final
					hand = append(hand, handOff{len(b.Jobs) - 1, tasks[i]})
				}
			} else if held, ok := byStore[st]; ok {
				b.Jobs = append(b.Jobs, Enqueued{Record: held, Deduplicated: true})
			}
		}
	default:
		return Batch{}, fmt.Errorf("batch %s: unexpected answer %q", b.ID, status)
	}
	for n, h := range hand {
		rec := b.Jobs[h.job].Record
		if err := c.handOver(ctx, rec, h.task); err != nil {
			rest := []Record{rec}
			for _, later := range hand[n+1:] {
				rest = append(rest, b.Jobs[later.job].Record)
			}
			c.abandonAll(rest, err)
			return b, unavailable(fmt.Errorf("batch %s: hand job %s to asynq (it and the %d jobs after it were abandoned): %w",
				b.ID, rec.ID, len(rest)-1, err))
		}
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
