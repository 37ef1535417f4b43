package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// PausedKey holds the paused stores: store -> JSON PauseInfo. A paused
// store gets no scheduled and no automatic jobs; manual jobs still run.
const PausedKey = "storekeeper:paused"

// PauseInfo says who paused a store and when.
type PauseInfo struct {
	Actor string    `json:"actor"`
	At    time.Time `json:"at"`
}

// Pause pauses a store that some node owns.
func Pause(ctx context.Context, rdb redis.Cmdable, store, actor string) error {
	if err := knownStore(ctx, rdb, store); err != nil {
		return err
	}
	b, _ := json.Marshal(PauseInfo{Actor: actor, At: time.Now().UTC()})
	return unavailableOrNil(rdb.HSet(ctx, PausedKey, store, string(b)).Err())
}

// Resume resumes a paused store; resuming one that is not paused is fine.
func Resume(ctx context.Context, rdb redis.Cmdable, store string) error {
	if err := knownStore(ctx, rdb, store); err != nil {
		return err
	}
	return unavailableOrNil(rdb.HDel(ctx, PausedKey, store).Err())
}

// Paused returns the paused stores.
func Paused(ctx context.Context, rdb redis.Cmdable) (map[string]PauseInfo, error) {
	h, err := rdb.HGetAll(ctx, PausedKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make(map[string]PauseInfo, len(h))
	for store, v := range h {
		var p PauseInfo
		_ = json.Unmarshal([]byte(v), &p)
		out[store] = p
	}
	return out, nil
}

// IsPaused reports whether store is paused.
func IsPaused(ctx context.Context, rdb redis.Cmdable, store string) (bool, error) {
	ok, err := rdb.HExists(ctx, PausedKey, store).Result()
	return ok, unavailableOrNil(err)
}

func knownStore(ctx context.Context, rdb redis.Cmdable, store string) error {
	if err := ValidateStoreName(store); err != nil {
		return err
	}
	ok, err := rdb.HExists(ctx, StoresKey, store).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return fmt.Errorf("%w %q: no node owns it", ErrUnknownStore, store)
	}
	return nil
}

func unavailableOrNil(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

// Nodes. Each worker node keeps NodeKey(node) alive (a TTL renewed by its
// heartbeat) and is listed in NodesKey for good. node.up is appended when
// a node starts; node.down once when its key expires, by whichever process
// notices first (NodeDownKey dedupes it until the node is up again).
const NodesKey = "storekeeper:nodes"

// NodeKey is a node's heartbeat: JSON NodeInfo, with a TTL.
func NodeKey(node string) string { return "storekeeper:node:" + node }

// NodeDownKey marks a node whose node.down was emitted.
func NodeDownKey(node string) string { return "storekeeper:nodedown:" + node }

// NodeInfo is a node's heartbeat value.
type NodeInfo struct {
	Node     string   `json:"node"`
	Host     string   `json:"host"`
	Instance string   `json:"instance"`
	Stores   []string `json:"stores"`
	// Lost are the stores this node has but does not serve: another
	// claim holds their lease (store -> the node that holds it).
	Lost      map[string]string `json:"lost,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	At        time.Time         `json:"at"`
}

var nodeUpScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[5])
return 1
`)

// NodeUp announces a starting node: its heartbeat, and node.up.
func NodeUp(ctx context.Context, rdb redis.Scripter, info NodeInfo, ttl time.Duration, eventsMaxLen int64) error {
	b, _ := json.Marshal(info)
	ev, _ := json.Marshal(Event{Type: EventNodeUp, Node: info.Node, At: info.At})
	err := nodeUpScript.Run(ctx, rdb, []string{NodeKey(info.Node), NodesKey, NodeDownKey(info.Node), EventsStream},
		string(b), ttl.Milliseconds(), eventsMaxLen, info.Node, string(ev)).Err()
	return unavailableOrNil(err)
}

// NodeBeat renews a node's heartbeat.
func NodeBeat(ctx context.Context, rdb redis.Cmdable, info NodeInfo, ttl time.Duration) error {
	b, _ := json.Marshal(info)
	return unavailableOrNil(rdb.Set(ctx, NodeKey(info.Node), string(b), ttl).Err())
}

var nodeDownScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX') then return 0 end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'json', ARGV[2])
return 1
`)

// CheckNodes appends node.down for every known node whose heartbeat has
// expired and whose node.down was not emitted yet; it returns those nodes.
// Any number of processes may run it: each node.down is emitted once.
func CheckNodes(ctx context.Context, rdb redis.UniversalClient, eventsMaxLen int64) ([]string, error) {
	nodes, err := rdb.SMembers(ctx, NodesKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var down []string
	for _, n := range nodes {
		now := time.Now().UTC()
		ev, _ := json.Marshal(Event{Type: EventNodeDown, Node: n, At: now})
		emitted, err := nodeDownScript.Run(ctx, rdb, []string{NodeKey(n), NodeDownKey(n), EventsStream},
			eventsMaxLen, string(ev), now.Format(time.RFC3339Nano)).Int()
		if err != nil {
			return down, unavailable(err)
		}
		if emitted == 1 {
			down = append(down, n)
		}
	}
	return down, nil
}

// NodeStatus is a known node and whether its heartbeat is alive.
type NodeStatus struct {
	Node string    `json:"node"`
	Up   bool      `json:"up"`
	Info *NodeInfo `json:"info,omitempty"` // the live heartbeat
}

// Nodes lists every known node.
func Nodes(ctx context.Context, rdb redis.Cmdable) ([]NodeStatus, error) {
	names, err := rdb.SMembers(ctx, NodesKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]NodeStatus, 0, len(names))
	for _, n := range names {
		st := NodeStatus{Node: n}
		v, err := rdb.Get(ctx, NodeKey(n)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, unavailable(err)
		}
		if err == nil {
			var info NodeInfo
			if json.Unmarshal([]byte(v), &info) == nil {
				st.Up, st.Info = true, &info
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// SchedulesKey holds each node's schedules: node -> JSON NodeSchedules,
// written when the node's scheduler starts and after each run.
const SchedulesKey = "storekeeper:schedules"

// ScheduleInfo is one kind's schedule on a node.
type ScheduleInfo struct {
	Spec string    `json:"spec"` // a cron spec, or "off"
	Next time.Time `json:"next,omitzero"`
	Last time.Time `json:"last,omitzero"`
}

// NodeSchedules is what a node schedules, for the stores it owns.
type NodeSchedules struct {
	Node   string                `json:"node"`
	Stores []string              `json:"stores"`
	Kinds  map[Kind]ScheduleInfo `json:"kinds"`
	At     time.Time             `json:"at"`
}

// Schedules returns every node's schedules.
func Schedules(ctx context.Context, rdb redis.Cmdable) ([]NodeSchedules, error) {
	h, err := rdb.HGetAll(ctx, SchedulesKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var out []NodeSchedules
	for _, v := range h {
		var s NodeSchedules
		if json.Unmarshal([]byte(v), &s) == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// SlotKey is claimed (SET NX, with the slot's length as TTL) by the run of
// kind on store for the time slot starting at slot, so that a run is never
// doubled: not by two processes, not across a restart inside the slot.
func SlotKey(kind Kind, store string, slot time.Time) string {
	return "storekeeper:slot:" + string(kind) + ":" + store + ":" + strconv.FormatInt(slot.Unix(), 10)
}

// IncidentKey holds a store's reported corruption, as JSON Incident: set
// in the same step as its store.corrupt event and notification, deleted by
// a successful restore, so one incident is reported once whichever way
// it was found.
func IncidentKey(store string) string { return "storekeeper:incident:" + store }

// Incident is a store's corruption as reported.
type Incident struct {
	ID           string    `json:"id"`
	Evidence     string    `json:"evidence"`
	Action       string    `json:"action"`
	RestoreJobID string    `json:"restore_job_id,omitempty"`
	BackupID     string    `json:"backup_id,omitempty"`
	Node         string    `json:"node"`
	At           time.Time `json:"at"`
}

// StoreLostKey marks that node announced the loss of store's lease (one
// store.lost per loss); the node deletes it when it holds the lease again.
func StoreLostKey(store, node string) string { return "storekeeper:lost:" + store + ":" + node }

// announceScript sets KEYS[1] to ARGV[1] unless it is set, and in the
// same step appends an event and queues a notification, so that a report
// is never recorded as made without being made. A run that finds its own
// value is a copy of a run that did it.
var announceScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == ARGV[1] then return {'replayed', cur} end
  return {'exists', cur}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'json', ARGV[3])
if ARGV[4] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[4]) end
return {'applied', ''}
`)

// Announce sets key to value, appends ev and queues n (when not nil), all
// at once, unless key is set already. It reports whether the announcement
// is made (now, or by an earlier run of this very call: key holds value)
// and, when another value holds key, that value.
func Announce(ctx context.Context, rdb redis.Scripter, key, value string, eventsMaxLen int64, ev Event, n *Notification) (bool, string, error) {
	b, _ := json.Marshal(ev)
	push := ""
	if n != nil {
		push = OutboxPush(*n).Value
	}
	out, err := announceScript.Run(ctx, rdb, []string{key, EventsStream, OutboxKey}, value, eventsMaxLen, string(b), push).StringSlice()
	if err != nil {
		return false, "", unavailable(err)
	}
	if out[0] == "exists" {
		return false, out[1], nil
	}
	return true, "", nil
}

// AutoRestoresKey holds the times of a store's automatic restores in the
// last day (a sorted set: the circuit breaker's memory).
func AutoRestoresKey(store string) string { return "storekeeper:autorestores:" + store }

// PublishSchedules writes a node's schedules.
func PublishSchedules(ctx context.Context, rdb redis.Cmdable, s NodeSchedules) error {
	b, _ := json.Marshal(s)
	return unavailableOrNil(rdb.HSet(ctx, SchedulesKey, s.Node, string(b)).Err())
}
