package jobsdb

import (
	"context"
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
