package jobsdb

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// The reads the API, the metrics and the worker make of storekeeper's
// keys, so that no other package spells a key. Each costs a bounded number
// of round trips, said on each.

// StoreNames returns every store a node owns or owned (StoresKey), sorted.
// One round trip.
func StoreNames(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	names, err := rdb.HKeys(ctx, keyspace.StoresKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	slices.Sort(names)
	return names, nil
}

// StoreOwners returns each store's owning node (StoresKey), read
// ownersScan fields at a time (HSCAN): one round trip per thousand
// stores, none of which holds Redis for long, where one HGETALL would
// serve nothing else until it had answered every store (tens of
// milliseconds at 100,000 stores). A store added or removed while it
// reads may or may not be in the answer.
func StoreOwners(ctx context.Context, rdb redis.Cmdable) (map[string]string, error) {
	owners := map[string]string{}
	var cursor uint64
	for {
		kv, next, err := rdb.HScan(ctx, keyspace.StoresKey, cursor, "", ownersScan).Result()
		if err != nil {
			return nil, unavailable(err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			owners[kv[i]] = kv[i+1]
		}
		if next == 0 {
			return owners, nil
		}
		cursor = next
	}
}

// ownersScan is how many owners StoreOwners asks Redis for at a time.
const ownersScan = 1000

// PublishedStatus returns what each of stores' owners last published
// (StatsKey: a StoreStatus as JSON), in the order of stores, nil for a
// store with nothing published yet. Decoding is the caller's: the API
// refuses a restore on a value it cannot read, the listings skip it. One
// round trip.
func PublishedStatus(ctx context.Context, rdb redis.Cmdable, stores []string) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, len(stores))
	if len(stores) == 0 {
		return out, nil
	}
	// One MGET per thousand stores, in one pipeline: Redis serves other
	// clients between them, so a read of 100,000 stores never holds it
	// for more than one thousand.
	pipe := rdb.Pipeline()
	var gets []*redis.SliceCmd
	for start := 0; start < len(stores); start += 1000 {
		keys := make([]string, 0, min(1000, len(stores)-start))
		for _, s := range stores[start:min(start+1000, len(stores))] {
			keys = append(keys, keyspace.StatsKey(s))
		}
		gets = append(gets, pipe.MGet(ctx, keys...))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable(err)
	}
	i := 0
	for _, g := range gets {
		for _, v := range g.Val() {
			if s, ok := v.(string); ok {
				out[i] = json.RawMessage(s)
			}
			i++
		}
	}
	return out, nil
}

// StoreOwnerAndStatus returns store's owner and what it last published
// (nil: nothing yet), or ErrUnknownStore when no node owns or owned it.
// One round trip.
func StoreOwnerAndStatus(ctx context.Context, rdb redis.Cmdable, store string) (string, json.RawMessage, error) {
	pipe := rdb.Pipeline()
	owner := pipe.HGet(ctx, keyspace.StoresKey, store)
	stats := pipe.Get(ctx, keyspace.StatsKey(store))
	_, _ = pipe.Exec(ctx)
	node, err := owner.Result()
	if errors.Is(err, redis.Nil) {
		return "", nil, fmt.Errorf("%w %q", jobs.ErrUnknownStore, store)
	} else if err != nil {
		return "", nil, unavailable(err)
	}
	v, err := stats.Result()
	if errors.Is(err, redis.Nil) {
		return node, nil, nil
	} else if err != nil {
		return "", nil, unavailable(err)
	}
	return node, json.RawMessage(v), nil
}

// BackupFiles returns the file lists of store's backups as its owner
// last published them (BackupFilesKey), nil when it has published none.
func BackupFiles(ctx context.Context, rdb redis.Cmdable, store string) (jobs.BackupFileLists, error) {
	v, err := rdb.Get(ctx, keyspace.BackupFilesKey(store)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	} else if err != nil {
		return nil, unavailable(err)
	}
	var out jobs.BackupFileLists
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("store %s: published backup files: %w", store, err)
	}
	return out, nil
}

// LastEventID returns the id of the events stream's newest entry, "0-0"
// when the stream is empty: where a tail that must miss nothing appended
// from now on starts. One round trip.
func LastEventID(ctx context.Context, rdb redis.Cmdable) (string, error) {
	msgs, err := rdb.XRevRangeN(ctx, keyspace.EventsStream, "+", "-", 1).Result()
	if err != nil {
		return "", unavailable(err)
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// SubscribeCancels subscribes to CancelChannel, on which Cancel publishes
// the ids of canceled jobs. The caller closes the subscription.
func SubscribeCancels(ctx context.Context, rdb redis.UniversalClient) *redis.PubSub {
	return rdb.Subscribe(ctx, keyspace.CancelChannel)
}

// CountNotifyFailed counts one notify job that failed for good in
// NotifyFailedKey (such failures are counted, never notified: no loop).
// One round trip.
func CountNotifyFailed(ctx context.Context, rdb redis.Cmdable) error {
	return unavailableOrNil(rdb.Incr(ctx, keyspace.NotifyFailedKey).Err())
}

// JobsPage returns batch's jobs (BatchKey), or without a batch the jobs
// not finished yet (the queues' InFlightKey sets, found with SCAN: one
// round trip per thousand keys in Redis, then one for their union),
// newest first: with limit > 0, at most limit of them, those older than
// cursor (a job id from the last page; "" starts at the newest), and the
// cursor of the next page ("" on the last). The ids come in one round
// trip (about 30 bytes each), the page's records in one more; a job whose
// record has expired is left out (so a page can be short of limit with
// more to come: follow the cursor).
func (c *Client) JobsPage(ctx context.Context, batch, cursor string, limit int) ([]jobs.Record, string, error) {
	var ids []string
	var err error
	if batch != "" {
		ids, err = c.rdb.SMembers(ctx, keyspace.BatchKey(batch)).Result()
	} else {
		ids, err = c.inFlightIDs(ctx)
	}
	if err != nil {
		return nil, "", unavailable(err)
	}
	if limit <= 0 {
		recs, err := c.records(ctx, ids)
		return recs, "", err
	}
	slices.SortFunc(ids, func(a, b string) int { return cmp.Compare(b, a) })
	if cursor != "" {
		ids = ids[sort.Search(len(ids), func(i int) bool { return ids[i] < cursor }):]
	}
	next := ""
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	recs, err := c.records(ctx, ids)
	return recs, next, err
}

func (c *Client) inFlightIDs(ctx context.Context) ([]string, error) {
	var sets []string
	iter := c.rdb.Scan(ctx, 0, keyspace.InFlightKey("*"), 1000).Iterator()
	for iter.Next(ctx) {
		sets = append(sets, iter.Val())
	}
	if err := iter.Err(); err != nil || len(sets) == 0 {
		return nil, err
	}
	return c.rdb.SUnion(ctx, sets...).Result()
}

// records reads the records of ids in one round trip, newest first (ids
// are time-sortable), leaving out the ones that have expired.
func (c *Client) records(ctx context.Context, ids []string) ([]jobs.Record, error) {
	out := []jobs.Record{}
	if len(ids) == 0 {
		return out, nil
	}
	pipe := c.rdb.Pipeline()
	gets := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		gets[i] = pipe.HGetAll(ctx, keyspace.RecordKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, unavailable(err)
	}
	for _, g := range gets {
		h := g.Val()
		if len(h) == 0 {
			continue // expired
		}
		r, err := jobs.RecordFromHash(h)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b jobs.Record) int { return cmp.Compare(b.ID, a.ID) })
	return out, nil
}
