package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Notification is what a sink receives: for a job's final failure, a store
// found corrupt, a corrupt backup, an automatic restore that completed,
// and any restore that failed. Never for a success or a successful manual
// restore, and never for a failing notify job.
type Notification struct {
	// ID is stable: the same cause always gives the same id, so a
	// receiver can drop a duplicate delivery.
	ID      string    `json:"id"`
	Type    EventType `json:"type"` // the event that caused it
	Store   string    `json:"store,omitempty"`
	JobID   string    `json:"job_id,omitempty"`
	Kind    Kind      `json:"kind,omitempty"`
	Trigger Trigger   `json:"trigger,omitempty"`
	Actor   string    `json:"actor,omitempty"`
	Node    string    `json:"node,omitempty"`
	Error   string    `json:"error,omitempty"`
	Summary string    `json:"summary"` // one human line
	// store.corrupt: what storekeeper does about it ("auto_restore", or
	// why not: "breaker_open", "policy_off", "paused", "no_backup").
	Action       string `json:"action,omitempty"`
	RestoreJobID string `json:"restore_job_id,omitempty"`
	// store.restored and backup.corrupt
	BackupID   string    `json:"backup_id,omitempty"`
	BackupAt   time.Time `json:"backup_at,omitzero"` // the rollback window: writes after it are gone
	Quarantine string    `json:"quarantine,omitempty"`
	At         time.Time `json:"at"`
}

// NotificationID derives a notification's id from what caused it.
func NotificationID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "n" + hex.EncodeToString(h.Sum(nil)[:12])
}

// OutboxKey is the list of notifications written with the change that
// caused them (in the same atomic step) and not yet handed to the notify
// queue. Each worker moves entries to its own OutboxProcessingKey while it
// enqueues their deliveries, so a crash loses none.
const OutboxKey = "storekeeper:outbox"

// OutboxProcessingKey is node's list of notifications being dispatched.
func OutboxProcessingKey(node string) string { return OutboxKey + ":" + node }

// OutboxPush is the push that queues n in the outbox, for a caller that
// writes it with other commands in one transaction.
func OutboxPush(n Notification) ListPush {
	b, _ := json.Marshal(n)
	return ListPush{Key: OutboxKey, Value: string(b)}
}

// Notify adds n to the outbox as part of the change.
func (c *Change) Notify(n Notification) { c.Push = append(c.Push, OutboxPush(n)) }

// NotifyFailedKey counts notify jobs that failed for good (they are
// logged and counted, never notified).
const NotifyFailedKey = "storekeeper:notify:failed"

// deliveryKey marks one notification as handed to one sink's queue.
func deliveryKey(notificationID, sink string) string {
	return "storekeeper:delivery:" + notificationID + ":" + sink
}

// enqueueNotifyScript creates a notify job's record unless this
// notification was already handed to this sink.
var enqueueNotifyScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  -- sent twice (a retry after a broken connection): the delivery is this job's
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
`)

// deliveryMemory is how long a delivery is remembered, so that an outbox
// entry dispatched twice (a crash between enqueue and acknowledgement)
// is delivered once.
const deliveryMemory = 24 * time.Hour

// EnqueueNotify makes a notify job delivering n to the named sink, unless
// one was made already; it reports whether it made one. The payload names
// the sink: secrets stay in configuration, never in tasks.
func (c *Client) EnqueueNotify(ctx context.Context, n Notification, sink string) (Record, bool, error) {
	body, err := json.Marshal(n)
	if err != nil {
		return Record{}, false, err
	}
	p := Payload{JobID: NewID(), Kind: KindNotify, Trigger: TriggerAuto, Actor: ActorSystem, Sink: sink, Notification: body}
	task, err := p.Encode()
	if err != nil {
		return Record{}, false, err
	}
	now := time.Now().UTC()
	rec := Record{ID: p.JobID, Kind: KindNotify, Queue: NotifyQueue, State: StatePending, Trigger: p.Trigger, Actor: p.Actor,
		MaxRetry: c.cfg.MaxRetry[KindNotify], Errors: []AttemptError{}, EnqueuedAt: now}
	ev, _ := json.Marshal(Event{Type: EventJobEnqueued, JobID: rec.ID, Kind: KindNotify, Store: n.Store, Trigger: rec.Trigger,
		Actor: rec.Actor, MaxRetry: rec.MaxRetry, At: now})
	argv := rec.appendFields([]any{rec.ID, int64(deliveryMemory / time.Second), c.cfg.EventsMaxLen, string(ev)})
	keys := []string{deliveryKey(n.ID, sink), RecordKey(rec.ID), EventsStream, InFlightKey(NotifyQueue)}
	made, err := enqueueNotifyScript.Run(ctx, c.rdb, keys, argv...).Int()
	if err != nil {
		return Record{}, false, unavailable(err)
	}
	if made == 0 {
		return Record{}, false, nil
	}
	if err := c.toAsynq(ctx, rec, task); err != nil {
		c.rdb.Del(context.WithoutCancel(ctx), deliveryKey(n.ID, sink)) // let a later dispatch retry it
		return Record{}, false, err
	}
	return rec, true, nil
}

// DecodeNotification parses a notify payload's notification.
func DecodeNotification(b []byte) (Notification, error) {
	var n Notification
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("%w: notification: %w", ErrBadPayload, err)
	}
	if n.ID == "" || n.Type == "" {
		return n, errors.New("notification without id or type")
	}
	return n, nil
}
