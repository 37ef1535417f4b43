package jobsdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// Client enqueues jobs: it validates, routes a job to the queue of the node
// owning its store, deduplicates, and writes the record, job.enqueued and
// the job's asynq task in one atomic step.
type Client struct {
	rdb  redis.UniversalClient
	insp *asynq.Inspector
	cfg  jobs.ClientConfig
	// batched runs the enqueue script. With cfg.Autopipeline over a
	// *redis.Client it is go-redis's blocking autopipeliner: each call
	// still waits for its own answer, but the scripts of concurrent
	// enqueues (32 API clients) travel in one write and one read instead
	// of one round trip each. That saves system calls on both sides and
	// lets Redis read them in one go (docs/BENCHMARKS.md, "The API"). The
	// script is safe to send twice (a batch retried after a broken
	// connection): see EnqueueScript.
	batched redis.Scripter
}

// NewClient returns a Client over rdb. It does not close rdb; closing rdb
// also stops the autopipeliner NewClient may start on it.
func NewClient(rdb redis.UniversalClient, cfg jobs.ClientConfig) *Client {
	c := &Client{rdb: rdb, insp: asynq.NewInspectorFromRedisClient(rdb), cfg: cfg.WithDefaults(), batched: rdb}
	if rc, ok := rdb.(*redis.Client); ok && c.cfg.Autopipeline {
		if ap, err := rc.AutoPipeline(); err == nil { // the client's one shared instance
			c.batched = ap
		}
	}
	return c
}

// Enqueue enqueues req, or returns the equal job already in flight. It
// costs one round trip: the script above (shared with concurrent enqueues
// under ClientConfig.Autopipeline), which records the job and queues its
// asynq task together, so a job is never recorded without its task.
//
// With ClientConfig.MinReplicas at least 1, the job is then confirmed on
// that many replicas, its record and its asynq task both (one more round
// trip, never autopipelined: see confirm), deduplicated or not. When
// fewer confirm in time, Enqueue fails with an error wrapping
// ErrUnconfirmed (so jobs.ErrUnavailable: the API's 503) that says the
// job may or may not have been accepted: it is recorded and queued on the
// primary and will run unless a failover loses it. Sending the same
// request again is safe: while that job is in flight its lock makes the
// repeat return it (Deduplicated) rather than make a second one, and a
// request naming its JobID finds it; either way the repeat is confirmed
// in turn.
func (c *Client) Enqueue(ctx context.Context, req jobs.Request) (jobs.Enqueued, error) {
	if err := jobs.ValidateStoreName(req.Store); err != nil {
		return jobs.Enqueued{}, err
	}
	if !req.Kind.Maintenance() {
		return jobs.Enqueued{}, fmt.Errorf("%w: %q is not a store job kind", jobs.ErrBadPayload, req.Kind)
	}
	id := req.JobID
	if id == "" {
		id = jobs.NewID()
	} else if _, err := jobs.IDTime(id); err != nil {
		return jobs.Enqueued{}, fmt.Errorf("%w: %w", jobs.ErrBadPayload, err)
	}
	p := jobs.Payload{JobID: id, Kind: req.Kind, Store: req.Store, Trigger: req.Trigger, Actor: req.Actor, BatchID: req.BatchID, Params: req.Params}
	rec, task, ev, err := c.newJob(p, time.Now().UTC())
	if err != nil {
		return jobs.Enqueued{}, err
	}
	restore := "0"
	if p.Kind.Exclusive() {
		restore = "1"
	}
	// The script queues the asynq task with the record (in the queue of
	// the owner it reads): a job is recorded and queued at once or not at
	// all.
	argv := rec.AppendFields([]any{rec.ID, restore, p.Params.Node, c.cfg.EventsMaxLen, ev, p.Store, jobs.NodeQueue(""), keyspace.InFlightKey(""), keyspace.RecordKey(""), task}, "node", "queue")
	keys := []string{keyspace.LockKey(p), keyspace.RestoreLockKey(p.Store), keyspace.RecordKey(rec.ID), keyspace.EventsStream, keyspace.StoresKey}
	// From here the enqueue runs to its end even if the caller goes away:
	// a script that ran but whose answer nobody read would leave a pending
	// record and a lock with no task behind them.
	ctx = context.WithoutCancel(ctx)
	out, err := keyspace.EnqueueScript.Run(ctx, c.batched, keys, argv...).StringSlice()
	if err != nil {
		return jobs.Enqueued{}, unavailable(err)
	}
	switch out[0] {
	case "replayed": // a copy of this call already wrote the record
		mine, err := jobs.RecordFromHash(pairs(out[2:]))
		if err != nil {
			return jobs.Enqueued{}, fmt.Errorf("job %s: %w", rec.ID, err)
		}
		// Its task was queued with it. The record may be terminal
		// already (settled meanwhile): final.
		return c.accepted(ctx, jobs.Enqueued{Record: mine})
	case "dup": // the script returned the held job's record
		held, err := jobs.RecordFromHash(pairs(out[2:]))
		if err != nil {
			return jobs.Enqueued{}, fmt.Errorf("job %s holding the lock: %w", out[1], err)
		}
		return c.accepted(ctx, jobs.Enqueued{Record: held, Deduplicated: true})
	case "conflict":
		return jobs.Enqueued{}, fmt.Errorf("%w on store %s: job %s", jobs.ErrRestoreInProgress, p.Store, out[1])
	case "unknown":
		return jobs.Enqueued{}, fmt.Errorf("%w %q: no node owns it", jobs.ErrUnknownStore, req.Store)
	}
	rec.Node = out[1]
	rec.Queue = jobs.NodeQueue(rec.Node)
	return c.accepted(ctx, jobs.Enqueued{Record: rec})
}

// accepted returns e once its job is confirmed on ClientConfig.MinReplicas
// replicas (see confirm), or the error saying it may or may not have been
// accepted. A job that is not confirmed is not abandoned: it is in place
// on the primary, and may well run.
func (c *Client) accepted(ctx context.Context, e jobs.Enqueued) (jobs.Enqueued, error) {
	if err := c.confirmAccepted(ctx, e.Record.ID); err != nil {
		return jobs.Enqueued{}, fmt.Errorf("job %s may or may not have been accepted: it is recorded and queued on the Redis primary, "+
			"which may lose it in a failover; the same request sent again returns this job while it is in flight: %w", e.Record.ID, err)
	}
	return e, nil
}

// newJob returns the pending record of the job p asks for, its asynq
// task (asynqTask) and its job.enqueued event as JSON (without a node:
// the enqueue script adds the owner's).
func (c *Client) newJob(p jobs.Payload, now time.Time) (jobs.Record, []byte, string, error) {
	rec := jobs.Record{
		ID: p.JobID, Kind: p.Kind, Store: p.Store, State: jobs.StatePending,
		Trigger: p.Trigger, Actor: p.Actor, BatchID: p.BatchID, Params: p.Params,
		MaxRetry: c.cfg.MaxRetry[p.Kind], Errors: []jobs.AttemptError{}, EnqueuedAt: now,
	}
	task, err := c.asynqTask(rec, p)
	if err != nil {
		return jobs.Record{}, nil, "", err
	}
	ev, _ := json.Marshal(jobs.Event{Type: jobs.EventJobEnqueued, JobID: rec.ID, Kind: rec.Kind, Store: rec.Store,
		Trigger: rec.Trigger, Actor: rec.Actor, MaxRetry: rec.MaxRetry, At: now})
	return rec, task, string(ev), nil
}

// asynqTask is job rec's asynq task message (keyspace.AsynqTask), p its
// payload: what the enqueue scripts queue with the record.
func (c *Client) asynqTask(rec jobs.Record, p jobs.Payload) ([]byte, error) {
	payload, err := p.Encode()
	if err != nil {
		return nil, err
	}
	return keyspace.AsynqTask(string(rec.Kind), payload, rec.ID, rec.MaxRetry, c.cfg.Timeout[rec.Kind]), nil
}

// Get returns a job's record.
func (c *Client) Get(ctx context.Context, id string) (jobs.Record, error) {
	h, err := c.rdb.HGetAll(ctx, keyspace.RecordKey(id)).Result()
	if err != nil {
		return jobs.Record{}, unavailable(err)
	}
	if len(h) == 0 {
		return jobs.Record{}, fmt.Errorf("%w %q", jobs.ErrUnknownJob, id)
	}
	return jobs.RecordFromHash(h)
}

// unavailable marks as ErrUnavailable the errors that say Redis cannot
// serve now rather than that the request is wrong: no answer (connection
// refused, timeouts) and the replies of a primary that may not write
// (transientReplies: no good replica under min-replicas-to-write, a
// replica answering after a failover, a dataset still loading).
func unavailable(err error) error {
	var reply redis.Error
	if errors.As(err, &reply) && !errors.Is(err, redis.ErrClosed) && !transientReply(reply.Error()) {
		return err
	}
	return fmt.Errorf("%w: %w", jobs.ErrUnavailable, err)
}

// transientReplies are the Redis error codes that go away on their own
// (a replica catching up, a failover ending) or once an operator acts:
// OOM is a Redis at its maxmemory under noeviction, which refuses writes
// until streams are trimmed, records expire or the limit is raised;
// NOAUTH, WRONGPASS and NOPERM a Redis whose password or ACL changed
// under a running process.
var transientReplies = []string{"NOREPLICAS", "READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "BUSY", "OOM", "NOAUTH", "WRONGPASS", "NOPERM"}

// unauthenticatedCommand is how Redis refuses a command of more than ten
// arguments (a script call) from a connection that has not authenticated,
// where a shorter one gets NOAUTH: a plain ERR, but the same cause, a
// password set on Redis under a process that has none.
const unauthenticatedCommand = "ERR Protocol error: unauthenticated"

func transientReply(msg string) bool {
	code, _, _ := strings.Cut(msg, " ")
	return slices.Contains(transientReplies, code) || strings.HasPrefix(msg, unauthenticatedCommand)
}
