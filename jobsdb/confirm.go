package jobsdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// ErrUnconfirmed: a write took effect on the Redis primary, but fewer
// replicas than jobs.ClientConfig.MinReplicas confirmed having it within
// MinReplicasTimeout (or the primary that answered no longer had it). It
// wraps jobs.ErrUnavailable, so the API answers 503: the caller cannot be
// told the write will survive a failover, only that it may.
var ErrUnconfirmed = fmt.Errorf("%w: not confirmed by enough Redis replicas", jobs.ErrUnavailable)

// confirm makes sure that what the Redis primary holds now — the records
// ids in particular, in a terminal state when terminal — is on at least n
// of its replicas, waiting up to timeout: Redis replicates
// asynchronously, and a replica promoted after a failover lacks what it
// had not received. n <= 0 confirms nothing and sends nothing.
//
// It is one pipeline, so one connection and one server, and one round
// trip: HGET of each record's state, PUBLISH on keyspace.ConfirmChannel, WAIT n.
// WAIT waits for the replication offset of the connection's own last
// write, so it must follow a write on the same connection, and the
// PUBLISH is that write. (PUBLISH always reaches the replication stream,
// writes no key, and is allowed where min-replicas-to-write refuses
// writes.) It is the PUBLISH, not the caller's own script, that WAIT
// follows, because the script often writes nothing: a script run twice by
// go-redis (its second run finds its own op: "replayed"), a deduplicated
// enqueue (the held job's record was written by another call), a guard
// that refused (the end was written before). Redis documents WAIT as
// waiting for the writes of its own connection only, which would then be
// some older write, or none (a new connection): WAIT could answer at once
// for a record no replica has. (Redis 7.0.15 was seen to be stricter:
// after any command on the connection, even a PING, WAIT waited for all
// the primary had written. Nothing documents that.)
// After the PUBLISH, the offset covers every write the primary made
// before it, whoever made it: the job's record, and asynq's task written
// after it. The HGETs run on the same server, just before: a record they
// find is covered, and one they do not find was lost (a failover between
// the write and this confirmation) and is reported.
//
// Under go-redis's MaxRetries the pipeline may be sent again on a new
// connection; the PUBLISH goes with it, so the WAIT is still right.
// WAIT blocks its connection for up to timeout, so confirm never goes
// through the autopipeliner (Client.batched): it would hold every
// concurrent caller's script behind it. timeout must be shorter than the
// client's read timeout (internal/config checks it), or the pipeline's
// read times out before WAIT answers.
func confirm(ctx context.Context, rdb redis.Cmdable, n int, timeout time.Duration, ids []string, terminal bool) error {
	return confirmWith(ctx, rdb, n, timeout, func(pipe redis.Pipeliner) func() error {
		states := make([]*redis.StringCmd, len(ids))
		for i, id := range ids {
			states[i] = pipe.HGet(ctx, keyspace.RecordKey(id), "state")
		}
		return func() error {
			for i, st := range states {
				s, err := st.Result()
				switch {
				case errors.Is(err, redis.Nil):
					return fmt.Errorf("%w: job %s has no record on the Redis primary that answered (lost in a failover?)", ErrUnconfirmed, ids[i])
				case err != nil:
					return fmt.Errorf("%w: read job %s: %w", ErrUnconfirmed, ids[i], err)
				case terminal && !jobs.State(s).Terminal():
					return fmt.Errorf("%w: job %s is %s on the Redis primary that answered, not ended (its end lost in a failover?)", ErrUnconfirmed, ids[i], s)
				}
			}
			return nil
		}
	})
}

// confirmWith is confirm's pipeline around the reads check queues (and
// whose results the function it returns checks, after the pipeline ran).
func confirmWith(ctx context.Context, rdb redis.Cmdable, n int, timeout time.Duration, check func(redis.Pipeliner) func() error) error {
	if n <= 0 {
		return nil
	}
	pipe := rdb.Pipeline()
	verify := check(pipe)
	pipe.Publish(ctx, keyspace.ConfirmChannel, "")
	// Pipeliner has no Wait. WAIT's 0 is "forever": at least 1 ms.
	acks := pipe.Do(ctx, "wait", n, max(1, timeout.Milliseconds()))
	_, _ = pipe.Exec(ctx) // each command's error is read below
	if err := verify(); err != nil {
		return err
	}
	got, err := acks.Int64()
	if err != nil {
		// Any error, a reply included (a server demoted to replica refuses
		// WAIT): the write is not confirmed.
		return fmt.Errorf("%w: WAIT %d: %w", ErrUnconfirmed, n, err)
	}
	if got < int64(n) {
		return fmt.Errorf("%w: %d of the %d replicas required confirmed within %s", ErrUnconfirmed, got, n, timeout)
	}
	return nil
}

// ConfirmEnded makes sure job id's terminal state is on at least n
// replicas of the Redis primary (see confirm), waiting up to timeout; n
// <= 0 confirms nothing and costs nothing. A worker calls it after the
// write that ends a job, and when an attempt finds its job already ended,
// before it acknowledges the task to asynq: an error (ErrUnconfirmed)
// means the end may not survive a failover, so the task must stay with
// asynq, whose next attempt checks again — and runs the job again if
// the end was indeed lost.
func ConfirmEnded(ctx context.Context, rdb redis.Cmdable, id string, n int, timeout time.Duration) error {
	return confirm(ctx, rdb, n, timeout, []string{id}, true)
}

// confirmAccepted makes sure the records ids (and the asynq tasks handed
// over before the call) are on cfg.MinReplicas replicas; see confirm.
func (c *Client) confirmAccepted(ctx context.Context, ids ...string) error {
	return confirm(ctx, c.rdb, c.cfg.MinReplicas, c.cfg.MinReplicasTimeout, ids, false)
}

// ConfirmClaim makes sure store's lease still holds value (a claim just
// made) on the Redis primary and that it is on at least n of its replicas
// (see confirm); n <= 0 confirms nothing. A worker acts on a claim only
// once it is confirmed: a claim a failover lost would leave the lease's
// token counter behind, and the next claim would reuse its token, so two
// claims would hold the same fencing token (make chaos found tokens going
// back after failovers without confirmation).
func ConfirmClaim(ctx context.Context, rdb redis.Cmdable, store, value string, n int, timeout time.Duration) error {
	return confirmWith(ctx, rdb, n, timeout, func(pipe redis.Pipeliner) func() error {
		cur := pipe.Get(ctx, keyspace.LeaseKey(store))
		return func() error {
			v, err := cur.Result()
			switch {
			case errors.Is(err, redis.Nil):
				return fmt.Errorf("%w: store %s has no lease on the Redis primary that answered (the claim lost in a failover?)", ErrUnconfirmed, store)
			case err != nil:
				return fmt.Errorf("%w: read the lease of %s: %w", ErrUnconfirmed, store, err)
			case v != value:
				return fmt.Errorf("%w: the lease of %s is another claim's on the Redis primary that answered", ErrUnconfirmed, store)
			}
			return nil
		}
	})
}
