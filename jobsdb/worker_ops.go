package jobsdb

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// InFlightIDs returns a queue's unfinished job ids and Redis's clock (the
// clock a record's enq_ms is on), in one round trip.
func InFlightIDs(ctx context.Context, c redis.Cmdable, queue string) ([]string, time.Time, error) {
	pipe := c.Pipeline()
	ids := pipe.SMembers(ctx, keyspace.InFlightKey(queue))
	now := pipe.Time(ctx)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, time.Time{}, unavailable(err)
	}
	return ids.Val(), now.Val(), nil
}

// DropInFlight removes id from a queue's in-flight set (a job whose record
// is gone or already final).
func DropInFlight(ctx context.Context, c redis.Cmdable, queue, id string) error {
	if err := c.SRem(ctx, keyspace.InFlightKey(queue), id).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// ClaimSlot claims one scheduled run of kind on store for the slot starting
// at slot, for holder, for ttl: true for the one claimant that wins it.
func ClaimSlot(ctx context.Context, c redis.Cmdable, kind jobs.Kind, store string, slot time.Time, holder string, ttl time.Duration) (bool, error) {
	won, err := c.SetNX(ctx, keyspace.SlotKey(kind, store, slot), holder, ttl).Result()
	if err != nil {
		return false, unavailable(err)
	}
	return won, nil
}

// ReportedIncident returns store's reported incident as stored (JSON
// Incident), ok false when none is.
func ReportedIncident(ctx context.Context, c redis.Cmdable, store string) (raw string, ok bool, err error) {
	raw, err = c.Get(ctx, keyspace.IncidentKey(store)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, unavailable(err)
	}
	return raw, true, nil
}

// AnnounceIncident reports store's incident (value: JSON Incident) with
// its event and notification, unless one is reported already: made false
// and the reported one's value then (see Announce).
func AnnounceIncident(ctx context.Context, c redis.Scripter, store, value string, eventsMaxLen int64, ev jobs.Event, n *jobs.Notification) (made bool, other string, err error) {
	return Announce(ctx, c, keyspace.IncidentKey(store), value, eventsMaxLen, ev, n)
}

// AnnounceShipGap reports once that part of store's shipped commit log
// (timeline, from sequence number from) was dropped (value: JSON of the
// gap), with its event and notification.
func AnnounceShipGap(ctx context.Context, c redis.Scripter, store, timeline string, from uint64, value string, eventsMaxLen int64, ev jobs.Event, n *jobs.Notification) error {
	_, _, err := Announce(ctx, c, keyspace.ShipGapKey(store, timeline, from), value, eventsMaxLen, ev, n)
	return err
}

// AnnounceStoreLost reports once that node lost store's lease to holder
// (the holder's lease value), with its event and notification.
func AnnounceStoreLost(ctx context.Context, c redis.Scripter, store, node, holder string, eventsMaxLen int64, ev jobs.Event, n *jobs.Notification) error {
	_, _, err := Announce(ctx, c, keyspace.StoreLostKey(store, node), holder, eventsMaxLen, ev, n)
	return err
}

// ClearStoreLost forgets that node lost store (it holds it again), so a
// later loss is announced again.
func ClearStoreLost(ctx context.Context, c redis.Cmdable, store, node string) error {
	if err := c.Del(ctx, keyspace.StoreLostKey(store, node)).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// AdmitAutoRestore is the automatic-restore breaker: true when fewer than
// limit automatic restores of store were admitted in the 24 h before now,
// recording this one under incidentID. Safe to repeat: the same incident
// asking again gets the same answer.
func AdmitAutoRestore(ctx context.Context, c redis.Scripter, store string, now time.Time, limit int, incidentID string) (bool, error) {
	n, err := keyspace.BreakerScript.Run(ctx, c, []string{keyspace.AutoRestoresKey(store)}, now.UnixMilli(), limit, incidentID).Int()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// NextOutbox returns the notification node should dispatch next: the
// oldest one it was dispatching when it stopped, else one moved from the
// outbox to its processing list (waiting up to wait). ok false: none came.
func NextOutbox(ctx context.Context, c redis.Cmdable, node string, wait time.Duration) (v string, ok bool, err error) {
	proc := keyspace.OutboxProcessingKey(node)
	v, err = c.LIndex(ctx, proc, -1).Result()
	if errors.Is(err, redis.Nil) {
		v, err = c.BLMove(ctx, keyspace.OutboxKey, proc, "RIGHT", "LEFT", wait).Result()
	}
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, unavailable(err)
	}
	return v, true, nil
}

// DoneOutbox removes a dispatched notification from node's processing
// list.
func DoneOutbox(ctx context.Context, c redis.Cmdable, node, v string) error {
	if err := c.LRem(ctx, keyspace.OutboxProcessingKey(node), 1, v).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}
