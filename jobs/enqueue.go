package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Enqueue errors; api maps them to status codes.
var (
	// ErrUnknownStore: no node owns (or ever owned) the store. 404.
	ErrUnknownStore = errors.New("unknown store")
	// ErrRestoreInProgress: a restore of another backup is pending or
	// running on the store. 409.
	ErrRestoreInProgress = errors.New("restore in progress")
	// ErrUnavailable: Redis could not be reached; nothing was enqueued. 503.
	ErrUnavailable = errors.New("job queue unavailable")
	// ErrUnknownJob: no record for that job id. 404.
	ErrUnknownJob = errors.New("unknown job")
)

// Request asks for one job.
type Request struct {
	Kind    Kind
	Store   string
	Params  Params
	Trigger Trigger
	Actor   string
	BatchID string
	// JobID is the id to give the job; empty: a new one. A caller that
	// must be able to repeat an enqueue after a failure (the automatic
	// restore of an incident) chooses it, and a repeat finds the job.
	JobID string
}

// Enqueued is the answer: the job's record, and whether it is an existing
// job that was already pending or running with the same parameters.
type Enqueued struct {
	Record       Record
	Deduplicated bool
}

// ClientConfig configures a Client; zero values take the defaults.
type ClientConfig struct {
	EventsMaxLen    int64                  // default DefaultEventsMaxLen
	HistoryMaxLen   int64                  // default DefaultHistoryMaxLen
	MaxRetry        map[Kind]int           // default DefaultMaxRetry
	Timeout         map[Kind]time.Duration // default DefaultTimeout
	RecordRetention time.Duration          // default DefaultRecordRetention
	// Autopipeline sends the enqueue script through go-redis's
	// autopipeliner (see Client.batched). It pays where many callers
	// enqueue at once, as at the API; a caller alone, or a closed loop of
	// a few (a worker, the schedules), only pays the hand-over to the
	// flusher and its wait for stragglers.
	Autopipeline bool
}

// WithDefaults fills the zero fields.
func (cfg ClientConfig) WithDefaults() ClientConfig {
	if cfg.EventsMaxLen == 0 {
		cfg.EventsMaxLen = DefaultEventsMaxLen
	}
	if cfg.HistoryMaxLen == 0 {
		cfg.HistoryMaxLen = DefaultHistoryMaxLen
	}
	if cfg.MaxRetry == nil {
		cfg.MaxRetry = DefaultMaxRetry
	}
	if cfg.Timeout == nil {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RecordRetention == 0 {
		cfg.RecordRetention = DefaultRecordRetention
	}
	return cfg
}

// DefaultTimeout bounds one attempt per kind. asynq keeps whole seconds.
var DefaultTimeout = map[Kind]time.Duration{
	KindCompact: 2 * time.Hour,
	KindBackup:  2 * time.Hour,
	KindRestore: 2 * time.Hour,
	KindVerify:  time.Hour,
	KindNotify:  time.Minute,
}

// Client enqueues jobs: it validates, routes a job to the queue of the node
// owning its store, deduplicates, writes the record and job.enqueued in one
// atomic step, then hands the task to asynq.
type Client struct {
	rdb  redis.UniversalClient
	aq   *asynq.Client
	insp *asynq.Inspector
	cfg  ClientConfig
	// batched runs the enqueue script. With cfg.Autopipeline over a
	// *redis.Client it is go-redis's blocking autopipeliner: each call
	// still waits for its own answer, but the scripts of concurrent
	// enqueues (32 API clients) travel in one write and one read instead
	// of one round trip each. That saves system calls on both sides and
	// lets Redis read them in one go (docs/BENCHMARKS.md, "The API"). The
	// script is safe to send twice (a batch retried after a broken
	// connection): see enqueueScript.
	batched redis.Scripter
}

// NewClient returns a Client over rdb. It does not close rdb; closing rdb
// also stops the autopipeliner NewClient may start on it.
func NewClient(rdb redis.UniversalClient, cfg ClientConfig) *Client {
	c := &Client{rdb: rdb, aq: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), cfg: cfg.WithDefaults(), batched: rdb}
	if rc, ok := rdb.(*redis.Client); ok && c.cfg.Autopipeline {
		if ap, err := rc.AutoPipeline(); err == nil { // the client's one shared instance
			c.batched = ap
		}
	}
	return c
}

// LockKey is the in-flight lock of one request (kind, store, parameters);
// RestoreLockKey is the one restore a store may have in flight. Workers
// release both on every terminal state.
func LockKey(p Payload) string {
	sum := sha256.Sum256([]byte(p.DedupeKey()))
	return "storekeeper:lock:" + p.Store + ":" + string(p.Kind) + ":" + hex.EncodeToString(sum[:8])
}

// BatchKey lists the job ids of one batch (an enqueue for every store),
// for GET /api/jobs?batch=; it expires with the records.
func BatchKey(batch string) string { return "storekeeper:batch:" + batch }

// RestoreLockKey is the restore lock of a store.
func RestoreLockKey(store string) string { return "storekeeper:lock:" + store + ":restore" }

// enqueueJobLua defines enqueueJob, the step every enqueue script takes
// for one job: route it to its store's owner, take the locks, write the
// record and append job.enqueued, or report why not: no owner, or the job
// that holds a lock. The owner is read inside, so the record's node and
// queue, the in-flight set and the event's node are completed here (the
// event arrives as JSON without a node, and gets it appended). The record
// also gets enq_ms, the time on Redis's clock, which the reconciler's
// grace is measured against. Its arguments: the lock, restore lock and
// record keys, the events stream and StoresKey, the job id, '1' for a
// restore, the events' cap, the event, the store, the prefixes of queue
// names, in-flight sets and records, and the record's fields (a table).
const enqueueJobLua = `
local function enqueueJob(lock, rlock, rec, events, stores, id, restore, maxlen, ev, store, qprefix, iprefix, rprefix, fields)
  local owner = redis.call('HGET', stores, store)
  if not owner then return {'unknown', ''} end
  local held = redis.call('GET', lock)
  if held then
    local r = redis.call('HGETALL', rprefix .. held)
    if #r > 0 then
      local out = {'dup', held}
      for _, v in ipairs(r) do out[#out+1] = v end
      return out
    end
    -- a lock whose job record is gone is stale: take it
  end
  if restore == '1' then
    local r = redis.call('GET', rlock)
    if r then return {'conflict', r} end
    redis.call('SET', rlock, id)
  end
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local queue = qprefix .. owner
  redis.call('SET', lock, id)
  redis.call('HSET', rec, 'node', owner, 'queue', queue, 'enq_ms', ms, unpack(fields))
  local e = string.sub(ev, 1, -2) .. ',"node":' .. cjson.encode(owner) .. '}'
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'json', e)
  redis.call('SADD', iprefix .. queue, id)
  return {'new', owner}
end
`

// enqueueScript enqueues one job (enqueueJob) in one round trip.
//
// It is safe to run any number of times: the job id is new to this call,
// so a run that finds the record is a copy of a run that wrote it (go-redis
// sent the script again after a read timed out, and a stalled Redis ran
// both). It writes nothing and answers 'replayed' with the record as it is
// now, which may already be terminal: a reconciler can have settled it
// between the two runs, and a terminal state is final.
var enqueueScript = redis.NewScript(enqueueJobLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then
  local r = {'replayed', ''}
  for _, v in ipairs(redis.call('HGETALL', KEYS[3])) do r[#r+1] = v end
  return r
end
return enqueueJob(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  ARGV[6], ARGV[7], ARGV[8], {unpack(ARGV, 9)})
`)

// Enqueue enqueues req, or returns the equal job already in flight. It
// costs two round trips: the script above (shared with concurrent
// enqueues under ClientConfig.Autopipeline), and asynq's enqueue; one when
// the request is deduplicated.
func (c *Client) Enqueue(ctx context.Context, req Request) (Enqueued, error) {
	if err := ValidateStoreName(req.Store); err != nil {
		return Enqueued{}, err
	}
	if !req.Kind.Maintenance() {
		return Enqueued{}, fmt.Errorf("%w: %q is not a store job kind", ErrBadPayload, req.Kind)
	}
	id := req.JobID
	if id == "" {
		id = NewID()
	} else if _, err := IDTime(id); err != nil {
		return Enqueued{}, fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	p := Payload{JobID: id, Kind: req.Kind, Store: req.Store, Trigger: req.Trigger, Actor: req.Actor, BatchID: req.BatchID, Params: req.Params}
	rec, task, ev, err := c.newJob(p, time.Now().UTC())
	if err != nil {
		return Enqueued{}, err
	}
	restore := "0"
	if p.Kind == KindRestore {
		restore = "1"
	}
	argv := rec.appendFields([]any{rec.ID, restore, c.cfg.EventsMaxLen, ev, p.Store, NodeQueue(""), InFlightKey(""), RecordKey("")}, "node", "queue")
	keys := []string{LockKey(p), RestoreLockKey(p.Store), RecordKey(rec.ID), EventsStream, StoresKey}
	// From here the enqueue runs to its end even if the caller goes away:
	// a script that ran but whose answer nobody read would leave a pending
	// record and a lock with no task behind them.
	ctx = context.WithoutCancel(ctx)
	out, err := enqueueScript.Run(ctx, c.batched, keys, argv...).StringSlice()
	if err != nil {
		return Enqueued{}, unavailable(err)
	}
	switch out[0] {
	case "replayed": // a copy of this call already wrote the record
		mine, err := RecordFromHash(pairs(out[2:]))
		if err != nil {
			return Enqueued{}, fmt.Errorf("job %s: %w", rec.ID, err)
		}
		if mine.State != StatePending {
			// Settled meanwhile (a reconciler found no task): final.
			return Enqueued{Record: mine}, nil
		}
		if err := c.toAsynq(ctx, mine, task); err != nil {
			return Enqueued{}, err
		}
		return Enqueued{Record: mine}, nil
	case "dup": // the script returned the held job's record
		held, err := RecordFromHash(pairs(out[2:]))
		if err != nil {
			return Enqueued{}, fmt.Errorf("job %s holding the lock: %w", out[1], err)
		}
		return Enqueued{Record: held, Deduplicated: true}, nil
	case "conflict":
		return Enqueued{}, fmt.Errorf("%w on store %s: job %s", ErrRestoreInProgress, p.Store, out[1])
	case "unknown":
		return Enqueued{}, fmt.Errorf("%w %q: no node owns it", ErrUnknownStore, req.Store)
	}
	rec.Node = out[1]
	rec.Queue = NodeQueue(rec.Node)
	if err := c.toAsynq(ctx, rec, task); err != nil {
		return Enqueued{}, err
	}
	return Enqueued{Record: rec}, nil
}

// newJob returns the pending record of the job p asks for, its asynq
// task payload and its job.enqueued event as JSON (without a node: the
// enqueue script adds the owner's).
func (c *Client) newJob(p Payload, now time.Time) (Record, []byte, string, error) {
	task, err := p.Encode()
	if err != nil {
		return Record{}, nil, "", err
	}
	rec := Record{
		ID: p.JobID, Kind: p.Kind, Store: p.Store, State: StatePending,
		Trigger: p.Trigger, Actor: p.Actor, BatchID: p.BatchID, Params: p.Params,
		MaxRetry: c.cfg.MaxRetry[p.Kind], Errors: []AttemptError{}, EnqueuedAt: now,
	}
	ev, _ := json.Marshal(Event{Type: EventJobEnqueued, JobID: rec.ID, Kind: rec.Kind, Store: rec.Store,
		Trigger: rec.Trigger, Actor: rec.Actor, MaxRetry: rec.MaxRetry, At: now})
	return rec, task, string(ev), nil
}

// toAsynq hands a recorded job's task to asynq, or abandons the job.
func (c *Client) toAsynq(ctx context.Context, rec Record, task []byte) error {
	if err := c.handOver(ctx, rec, task); err != nil {
		c.abandon(rec, err)
		return unavailable(fmt.Errorf("hand job %s to asynq: %w", rec.ID, err))
	}
	return nil
}

// handOver hands a recorded job's task to asynq.
func (c *Client) handOver(ctx context.Context, rec Record, task []byte) error {
	_, err := c.aq.EnqueueContext(ctx, asynq.NewTask(string(rec.Kind), task),
		asynq.TaskID(rec.ID), asynq.Queue(rec.Queue), asynq.MaxRetry(rec.MaxRetry), asynq.Timeout(c.cfg.Timeout[rec.Kind]))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		// The id was made for this job, so the task is this one: asynq's
		// enqueue was sent twice and its second run found the first.
		err = nil
	}
	return err
}

// abandon finishes a job whose task never reached asynq, through the one
// finish path: the record fails, its locks go, job.failed follows
// job.enqueued, and history has its entry. Only a job still pending and
// never started is abandoned (an asynq enqueue that timed out may still
// have landed, and its attempt may be running). Best effort: Redis may be
// the reason it failed; then the worker's reconciler settles the job once
// its grace has passed. The caller was told (an error), so nothing is
// notified.
func (c *Client) abandon(rec Record, cause error) { c.abandonAll([]Record{rec}, cause) }

// abandonAll abandons recs, all within one 2 s budget: when Redis is the
// reason, the first uses it up and the rest are left to the reconciler.
func (c *Client) abandonAll(recs []Record, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, rec := range recs {
		ch := Change{Op: NewOp("abandon")}
		ch.End(rec, Terminal{State: StateFailed, Reason: "enqueue failed", Error: cause.Error(), At: time.Now().UTC()}, c.cfg)
		_, _ = Apply(ctx, c.rdb, rec.ID, ObservedGuard(Record{State: StatePending}), ch)
	}
}

// Get returns a job's record.
func (c *Client) Get(ctx context.Context, id string) (Record, error) {
	h, err := c.rdb.HGetAll(ctx, RecordKey(id)).Result()
	if err != nil {
		return Record{}, unavailable(err)
	}
	if len(h) == 0 {
		return Record{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	return RecordFromHash(h)
}

// unavailable marks errors that are not Redis replies (connection refused,
// timeouts) as ErrUnavailable.
func unavailable(err error) error {
	var reply redis.Error
	if errors.As(err, &reply) && !errors.Is(err, redis.ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
