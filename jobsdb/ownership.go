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

// PublishBackupFiles sets store's published backup file lists
// (BackupFilesKey; js: jobs.BackupFileLists as JSON) if lease is still
// the store's lease value; it reports whether it did.
func PublishBackupFiles(ctx context.Context, rdb redis.Scripter, store, lease, js string) (bool, error) {
	n, err := keyspace.PublishStatsScript.Run(ctx, rdb, []string{keyspace.LeaseKey(store), keyspace.BackupFilesKey(store)}, lease, js).Int()
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
// beats in one round trip: a pipeline of HeartbeatScript, one call per
// beatChunk stores (each store's publish fenced by its lease, as
// RenewLease and PublishStats do), however many stores a node holds. When
// Redis does not know the script (restarted or promoted since the node's
// LoadScripts), it is loaded again and the pipeline sent again: the
// script may run twice, which renews and writes the same again.
func Heartbeat(ctx context.Context, rdb redis.UniversalClient, beats []Beat, ttl time.Duration) ([]BeatResult, error) {
	if len(beats) == 0 {
		return nil, nil
	}
	send := func() ([]*redis.Cmd, error) {
		pipe := rdb.Pipeline()
		var cmds []*redis.Cmd
		for start := 0; start < len(beats); start += beatChunk {
			chunk := beats[start:min(start+beatChunk, len(beats))]
			keys := make([]string, 0, 2*len(chunk))
			argv := make([]any, 0, 1+2*len(chunk))
			argv = append(argv, ttl.Milliseconds())
			for _, b := range chunk {
				keys = append(keys, keyspace.LeaseKey(b.Store), keyspace.StatsKey(b.Store))
				argv = append(argv, b.Lease, b.Status)
			}
			cmds = append(cmds, keyspace.HeartbeatScript.EvalSha(ctx, pipe, keys, argv...))
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
	out := make([]BeatResult, 0, len(beats))
	for _, c := range cmds {
		vals, err := c.Slice()
		if err != nil || len(vals)%3 != 0 {
			return nil, unavailable(fmt.Errorf("heartbeat: %v (%d values)", err, len(vals)))
		}
		for i := 0; i < len(vals); i += 3 {
			state, _ := vals[i].(string)
			holder, _ := vals[i+1].(string)
			published, _ := vals[i+2].(int64)
			r := BeatResult{Published: published == 1}
			switch state {
			case "ok":
				r.State = jobs.LeaseHeld
			case "expired":
				r.State = jobs.LeaseExpired
			default:
				r.State, r.Holder = jobs.LeaseTaken, holder
			}
			out = append(out, r)
		}
	}
	if len(out) != len(beats) {
		return nil, unavailable(fmt.Errorf("heartbeat: %d answers for %d stores", len(out), len(beats)))
	}
	return out, nil
}

// beatChunk is how many stores one heartbeat script renews and
// publishes: Redis is held for about a millisecond per chunk.
const beatChunk = 250
