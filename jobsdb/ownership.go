package jobsdb

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// ClaimLease claims store's lease for l's node, host and instance. It
// returns the lease value now held (its fencing token included) and true,
// or the value another node holds and false.
func ClaimLease(ctx context.Context, rdb redis.Scripter, store string, l jobs.Lease, ttl time.Duration) (string, bool, error) {
	out, err := keyspace.ClaimScript.Run(ctx, rdb, []string{keyspace.LeaseKey(store), keyspace.StoresKey, keyspace.LeaseTokenKey(store), keyspace.HomeKey(store)},
		l.Node, l.Host, l.Instance, ttl.Milliseconds(), store).StringSlice()
	if err != nil {
		return "", false, unavailable(err)
	}
	return out[1], out[0] == "ok", nil
}

// RenewLease extends store's lease if it still holds value. When another
// claim holds it, the second result is that claim's value.
func RenewLease(ctx context.Context, rdb redis.Scripter, store, value string, ttl time.Duration) (jobs.LeaseState, string, error) {
	out, err := keyspace.RenewScript.Run(ctx, rdb, []string{keyspace.LeaseKey(store)}, value, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return 0, "", unavailable(err)
	}
	switch out[0] {
	case "ok":
		return jobs.LeaseHeld, "", nil
	case "expired":
		return jobs.LeaseExpired, "", nil
	}
	return jobs.LeaseTaken, out[1], nil
}

// PublishStats sets store's published stats to js if lease is still the
// store's lease value; it reports whether it did.
func PublishStats(ctx context.Context, rdb redis.Scripter, store, lease, js string) (bool, error) {
	n, err := keyspace.PublishStatsScript.Run(ctx, rdb, []string{keyspace.LeaseKey(store), keyspace.StatsKey(store)}, lease, js).Int()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// Beat is one held store's part of a node's heartbeat: its lease value
// and the status to publish under it.
type Beat struct {
	Store, Lease, Status string
}

// BeatResult is what the heartbeat found for one store: the lease's state
// (and its holder when taken), and whether the status was published (only
// while the lease is still ours).
type BeatResult struct {
	State     jobs.LeaseState
	Holder    string
	Published bool
}

// Heartbeat renews every store's lease and publishes every status of
// beats in one round trip (a pipeline of the same fenced scripts as
// RenewLease and PublishStats, each store's publish after its renewal),
// however many stores a node holds. When Redis does not know the scripts
// (restarted or promoted since the node's LoadScripts), they are loaded
// again and the pipeline sent again: both scripts may run twice.
func Heartbeat(ctx context.Context, rdb redis.UniversalClient, beats []Beat, ttl time.Duration) ([]BeatResult, error) {
	if len(beats) == 0 {
		return nil, nil
	}
	send := func() ([]*redis.Cmd, error) {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, 0, 2*len(beats))
		for _, b := range beats {
			lease := keyspace.LeaseKey(b.Store)
			cmds = append(cmds,
				keyspace.RenewScript.EvalSha(ctx, pipe, []string{lease}, b.Lease, ttl.Milliseconds()),
				keyspace.PublishStatsScript.EvalSha(ctx, pipe, []string{lease, keyspace.StatsKey(b.Store)}, b.Lease, b.Status))
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := send()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := LoadScripts(ctx, rdb); err != nil {
			return nil, err
		}
		cmds, err = send()
	}
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]BeatResult, len(beats))
	for i := range beats {
		renewed, err := cmds[2*i].StringSlice()
		if err != nil || len(renewed) == 0 {
			return nil, unavailable(fmt.Errorf("lease renewal: %v", err))
		}
		switch renewed[0] {
		case "ok":
			out[i].State = jobs.LeaseHeld
		case "expired":
			out[i].State = jobs.LeaseExpired
		default:
			out[i].State = jobs.LeaseTaken
			if len(renewed) > 1 {
				out[i].Holder = renewed[1]
			}
		}
		n, err := cmds[2*i+1].Int()
		if err != nil {
			return nil, unavailable(fmt.Errorf("publishing stats: %w", err))
		}
		out[i].Published = n == 1
	}
	return out, nil
}
