package jobsdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// VAPID returns the deployment's VAPID keys, making them on first use:
// SET NX, then read back, so concurrent first callers on any nodes all
// get the pair that won.
func VAPID(ctx context.Context, rdb redis.Cmdable) (jobs.VAPIDKeys, error) {
	v, err := rdb.Get(ctx, keyspace.VAPIDKey).Result()
	if errors.Is(err, redis.Nil) {
		k, gerr := jobs.GenerateVAPIDKeys()
		if gerr != nil {
			return jobs.VAPIDKeys{}, gerr
		}
		b, _ := json.Marshal(k)
		if err := rdb.SetNX(ctx, keyspace.VAPIDKey, string(b), 0).Err(); err != nil {
			return jobs.VAPIDKeys{}, unavailable(err)
		}
		v, err = rdb.Get(ctx, keyspace.VAPIDKey).Result()
	}
	if err != nil {
		return jobs.VAPIDKeys{}, unavailable(err)
	}
	var k jobs.VAPIDKeys
	if err := json.Unmarshal([]byte(v), &k); err != nil {
		return jobs.VAPIDKeys{}, fmt.Errorf("vapid keys in %s: %w", keyspace.VAPIDKey, err)
	}
	if err := k.Validate(); err != nil {
		return jobs.VAPIDKeys{}, fmt.Errorf("vapid keys in %s: %w", keyspace.VAPIDKey, err)
	}
	return k, nil
}

func isLegacyID(id string) bool { return len(id) == 24 }

const pushMovedTTL = 7 * 24 * time.Hour

// Subscribe validates s, checks its endpoint and keeps it as owner's,
// replacing owner's earlier subscription of the same endpoint; another
// token's subscription of it is left alone. ErrTooManySubscriptions when
// owner has PerToken subscriptions of other endpoints already.
func Subscribe(ctx context.Context, rdb redis.Cmdable, s jobs.PushSubscription, owner string, opts jobs.SubscribeOptions) (jobs.PushSubscriptionRecord, error) {
	if err := s.Validate(); err != nil {
		return jobs.PushSubscriptionRecord{}, err
	}
	if err := jobs.CheckPushEndpoint(ctx, opts.Policy, s.Endpoint); err != nil {
		return jobs.PushSubscriptionRecord{}, err
	}
	if owner == "" {
		return jobs.PushSubscriptionRecord{}, errors.New("push subscription: no owner")
	}
	limit := opts.PerToken
	if limit <= 0 {
		limit = jobs.DefaultPushSubscriptionsPerToken
	}
	if _, err := migratePushSubscriptions(ctx, rdb, nil); err != nil {
		return jobs.PushSubscriptionRecord{}, err
	}
	rec := jobs.PushSubscriptionRecord{ID: jobs.PushSubscriptionID(owner, s.Endpoint), PushSubscription: s, Owner: owner, Actor: owner,
		SubscribedAt: time.Now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return jobs.PushSubscriptionRecord{}, err
	}
	kept, err := keyspace.SubscribeScript.Run(ctx, rdb, []string{keyspace.PushSubscriptionsKey, keyspace.PushOwnerKey(owner)}, rec.ID, string(b), limit).Int()
	if err != nil {
		return jobs.PushSubscriptionRecord{}, unavailable(err)
	}
	if kept == 0 {
		return jobs.PushSubscriptionRecord{}, fmt.Errorf("%w: token %s has %d, the most one token may have; unsubscribe one first",
			jobs.ErrTooManySubscriptions, owner, limit)
	}
	return rec, nil
}

// Unsubscribe forgets owner's subscription of endpoint and returns its id:
// ErrUnknownSubscription when owner has none, whoever else has.
func Unsubscribe(ctx context.Context, rdb redis.Cmdable, owner, endpoint string) (string, error) {
	if _, err := migratePushSubscriptions(ctx, rdb, nil); err != nil {
		return "", err
	}
	id := jobs.PushSubscriptionID(owner, endpoint)
	if err := forget(ctx, rdb, id, owner); err != nil {
		return "", err
	}
	return id, nil
}

// UnsubscribeEndpoint forgets every token's subscription of endpoint (an
// operator's unsubscribe) and returns their ids, sorted;
// ErrUnknownSubscription when there was none.
func UnsubscribeEndpoint(ctx context.Context, rdb redis.Cmdable, endpoint string) ([]string, error) {
	if _, err := migratePushSubscriptions(ctx, rdb, nil); err != nil {
		return nil, err
	}
	all, err := rdb.HGetAll(ctx, keyspace.PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var ids []string
	for id, v := range all {
		var rec jobs.PushSubscriptionRecord
		if json.Unmarshal([]byte(v), &rec) != nil || rec.Endpoint != endpoint {
			continue
		}
		if err := forget(ctx, rdb, id, rec.Owner); errors.Is(err, jobs.ErrUnknownSubscription) {
			continue // gone meanwhile
		} else if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no subscription of that endpoint", jobs.ErrUnknownSubscription)
	}
	slices.Sort(ids)
	return ids, nil
}

// ForgetPushSubscription deletes subscription id (ErrUnknownSubscription
// when there is none), as a push service's 404 or 410 asks.
func ForgetPushSubscription(ctx context.Context, rdb redis.Cmdable, id string) error {
	rec, err := PushSubscriptionByID(ctx, rdb, id)
	if err != nil {
		return err
	}
	return forget(ctx, rdb, rec.ID, rec.Owner)
}

// forget deletes id, owner's (an id is owner's for good: it is a hash of
// the owner and the endpoint).
func forget(ctx context.Context, rdb redis.Cmdable, id, owner string) error {
	n, err := keyspace.ForgetScript.Run(ctx, rdb, []string{keyspace.PushSubscriptionsKey, keyspace.PushOwnerKey(owner)}, id).Int()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w %s", jobs.ErrUnknownSubscription, id)
	}
	return nil
}

// PushSubscriptionByID returns subscription id. An id of the first layout
// finds the subscription it was moved to (its record has the new ID).
func PushSubscriptionByID(ctx context.Context, rdb redis.Cmdable, id string) (jobs.PushSubscriptionRecord, error) {
	v, err := rdb.HGet(ctx, keyspace.PushSubscriptionsKey, id).Result()
	if errors.Is(err, redis.Nil) && isLegacyID(id) {
		moved, merr := rdb.HGet(ctx, keyspace.PushMovedKey, id).Result()
		if merr == nil {
			v, err = rdb.HGet(ctx, keyspace.PushSubscriptionsKey, moved).Result()
		} else if !errors.Is(merr, redis.Nil) {
			err = merr
		}
	}
	if errors.Is(err, redis.Nil) {
		return jobs.PushSubscriptionRecord{}, fmt.Errorf("%w %s", jobs.ErrUnknownSubscription, id)
	}
	if err != nil {
		return jobs.PushSubscriptionRecord{}, unavailable(err)
	}
	var rec jobs.PushSubscriptionRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return jobs.PushSubscriptionRecord{}, fmt.Errorf("push subscription %s: %w", id, err)
	}
	if rec.Owner == "" { // a first-layout record not moved yet
		rec.Owner = rec.Actor
	}
	return rec, nil
}

// PushSubscriptionIDs lists the subscriptions' ids, sorted, once any of
// the first layout are moved.
func PushSubscriptionIDs(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	ids, err := rdb.HKeys(ctx, keyspace.PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	if ids, err = migratePushSubscriptions(ctx, rdb, ids); err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

// The first layout kept every subscription under the id of its endpoint
// alone, whoever made it, with the token name as its actor. Each is moved
// to its owner's (actor's) id as soon as any node of this layout lists,
// adds or removes subscriptions: newest first, at most
// DefaultPushSubscriptionsPerToken per owner (a token that filled the old
// global bound keeps its newest eight), never over the owner's own
// subscription of the same endpoint (it is newer). Each move is one
// script that does nothing if the entry changed meanwhile, so nodes
// moving at once agree. PushMovedKey remembers where each went.
//
// migratePushSubscriptions moves the first-layout entries among ids (all
// of them when ids is nil) and returns ids as they are after.
func migratePushSubscriptions(ctx context.Context, rdb redis.Cmdable, ids []string) ([]string, error) {
	if ids == nil {
		var err error
		if ids, err = rdb.HKeys(ctx, keyspace.PushSubscriptionsKey).Result(); err != nil {
			return nil, unavailable(err)
		}
	}
	var legacy []string
	for _, id := range ids {
		if isLegacyID(id) {
			legacy = append(legacy, id)
		}
	}
	if len(legacy) == 0 {
		return ids, nil
	}
	vals, err := rdb.HMGet(ctx, keyspace.PushSubscriptionsKey, legacy...).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	type entry struct {
		id, raw string
		rec     jobs.PushSubscriptionRecord
	}
	var entries []entry
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // gone meanwhile
		}
		e := entry{id: legacy[i], raw: raw}
		_ = json.Unmarshal([]byte(raw), &e.rec) // undecodable: no owner, dropped
		entries = append(entries, e)
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return b.rec.SubscribedAt.Compare(a.rec.SubscribedAt) })
	for _, e := range entries {
		owner := e.rec.Actor
		var newID, value string
		if owner != "" && e.rec.Endpoint != "" {
			rec := e.rec
			rec.ID, rec.Owner = jobs.PushSubscriptionID(owner, rec.Endpoint), owner
			b, _ := json.Marshal(rec)
			newID, value = rec.ID, string(b)
		}
		err := keyspace.MigrateScript.Run(ctx, rdb, []string{keyspace.PushSubscriptionsKey, keyspace.PushOwnerKey(owner), keyspace.PushMovedKey},
			e.id, e.raw, newID, value, jobs.DefaultPushSubscriptionsPerToken, int(pushMovedTTL/time.Second)).Err()
		if err != nil {
			return nil, unavailable(err)
		}
	}
	after, err := rdb.HKeys(ctx, keyspace.PushSubscriptionsKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	return after, nil
}
