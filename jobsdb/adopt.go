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

// AdoptLease claims store's lease for l's node, which is adopting it, and
// pins the store to that node so that no other node claims it again
// (keyspace.AdoptScript). Without force the lease must be free; with
// force it may still be held by a node whose heartbeat is gone. Either
// way the store's previous owner must be down. It returns the lease value
// now held and the node that owned the store before ("" when none did);
// a refusal wraps jobs.ErrStoreHeld and names the holder. Sent twice, the
// second run keeps the first's claim.
func AdoptLease(ctx context.Context, rdb redis.Scripter, store string, l jobs.Lease, force bool, ttl time.Duration) (value, previous string, err error) {
	return adopt(ctx, rdb, store, l, force, ttl, false)
}

// CheckAdopt tells, without changing anything, whether node could adopt
// store now (AdoptLease's script, checking only): the API's answer before
// it enqueues, the adopting worker's AdoptLease being the one that counts.
func CheckAdopt(ctx context.Context, rdb redis.Scripter, store, node string, force bool) error {
	_, _, err := adopt(ctx, rdb, store, jobs.Lease{Node: node}, force, 0, true)
	return err
}

func adopt(ctx context.Context, rdb redis.Scripter, store string, l jobs.Lease, force bool, ttl time.Duration, check bool) (value, previous string, err error) {
	out, err := keyspace.AdoptScript.Run(ctx, rdb, []string{keyspace.LeaseKey(store), keyspace.StoresKey, keyspace.LeaseTokenKey(store), keyspace.HomeKey(store)},
		l.Node, l.Host, l.Instance, ttl.Milliseconds(), store, flag(force), keyspace.NodeKey(""), flag(check)).StringSlice()
	if err != nil {
		return "", "", unavailable(err)
	}
	holder, _ := jobs.DecodeLease(out[1])
	switch out[0] {
	case "ok":
		return out[1], out[2], nil
	case "held":
		return "", out[2], fmt.Errorf("%w: store %s's lease is held by node %s (token %d); adopt it with force once that node is down",
			jobs.ErrStoreHeld, store, holder.Node, holder.Token)
	default: // alive
		node := holder.Node
		if node == "" {
			node = out[2]
		}
		return "", out[2], fmt.Errorf("%w: store %s's owner, node %s, is up: it still serves the store", jobs.ErrStoreHeld, store, node)
	}
}

// AbandonAdopt undoes the adoption of store that claimed value when it
// made no store (keyspace.AbandonAdoptScript): the lease is released, the
// pin and the owner are put back as they were before it. Sent again, or
// after another adoption, it changes nothing.
func AbandonAdopt(ctx context.Context, rdb redis.Scripter, store, node, value string) error {
	err := keyspace.AbandonAdoptScript.Run(ctx, rdb, []string{keyspace.LeaseKey(store), keyspace.StoresKey, keyspace.HomeKey(store)},
		value, node, store).Err()
	if err != nil {
		return unavailable(err)
	}
	return nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// SettleMoved settles as failed, with reason jobs.ReasonStoreMoved, every
// job of store still in flight on a node other than adopter (queued for
// the store's old owner, which will not run them): job.failed and a
// history entry each, no notification, and their asynq tasks deleted. A
// job whose state changed meanwhile is left to its new state. It returns
// the jobs it settled.
func (c *Client) SettleMoved(ctx context.Context, store, adopter, actor string) ([]string, error) {
	nodes, err := c.rdb.SMembers(ctx, keyspace.NodesKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var moved []string
	for _, n := range nodes {
		if n == adopter {
			continue
		}
		q := jobs.NodeQueue(n)
		ids, err := c.rdb.SMembers(ctx, keyspace.InFlightKey(q)).Result()
		if err != nil {
			return moved, unavailable(err)
		}
		for _, id := range ids {
			rec, err := c.Get(ctx, id)
			if errors.Is(err, jobs.ErrUnknownJob) {
				continue
			}
			if err != nil {
				return moved, err
			}
			if rec.Store != store || rec.State.Terminal() {
				continue
			}
			now := time.Now().UTC()
			msg := fmt.Sprintf("store %s was adopted by node %s; node %s will not run this job", store, adopter, rec.Node)
			ch := keyspace.Change{Op: keyspace.NewOp("moved")}
			ch.End(rec, jobs.Terminal{State: jobs.StateFailed, Reason: jobs.ReasonStoreMoved, Error: msg, At: now,
				Event: jobs.Event{Actor: actor, Attempt: rec.Attempts}}, c.cfg)
			res, err := Apply(ctx, c.rdb, id, keyspace.ObservedGuard(rec), ch)
			if err != nil {
				return moved, err
			}
			if res.OK {
				moved = append(moved, id)
				_ = c.insp.DeleteTask(rec.Queue, id) // best effort: a task left behind finds its job ended
			}
		}
	}
	return moved, nil
}
