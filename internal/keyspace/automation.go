package keyspace

import (
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// PausedKey holds the paused stores: store -> JSON PauseInfo. A paused
// store gets no scheduled and no automatic jobs; manual jobs still run.
const PausedKey = "storekeeper:paused"

// Nodes. Each worker node keeps NodeKey(node) alive (a TTL renewed by its
// heartbeat) and is listed in NodesKey for good. node.up is appended when
// a node starts; node.down once when its key expires, by whichever process
// notices first (NodeDownKey dedupes it until the node is up again).
const NodesKey = "storekeeper:nodes"

// NodeKey is a node's heartbeat: JSON NodeInfo, with a TTL.
func NodeKey(node string) string { return "storekeeper:node:" + node }

// NodeDownKey marks a node whose node.down was emitted.
func NodeDownKey(node string) string { return "storekeeper:nodedown:" + node }

var NodeUpScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[5])
return 1
`)

var NodeDownScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX') then return 0 end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'json', ARGV[2])
return 1
`)

// SchedulesKey holds each node's schedules: node -> JSON NodeSchedules,
// written when the node's scheduler starts and after each run.
const SchedulesKey = "storekeeper:schedules"

// SlotKey is claimed (SET NX, with the slot's length as TTL) by the run of
// kind on store for the time slot starting at slot, so that a run is never
// doubled: not by two processes, not across a restart inside the slot.
func SlotKey(kind jobs.Kind, store string, slot time.Time) string {
	return "storekeeper:slot:" + string(kind) + ":" + store + ":" + strconv.FormatInt(slot.Unix(), 10)
}

// IncidentKey holds a store's reported corruption, as JSON Incident: set
// in the same step as its store.corrupt event and notification, deleted by
// a successful restore, so one incident is reported once whichever way
// it was found.
func IncidentKey(store string) string { return "storekeeper:incident:" + store }

// ShipGapKey marks that a gap of store's shipped commit log (on timeline,
// from sequence number from) was announced: store.ship_gap and its
// notification go out once, however often the node that dropped it
// retries.
func ShipGapKey(store, timeline string, from uint64) string {
	return "storekeeper:shipgap:" + store + ":" + timeline + ":" + strconv.FormatUint(from, 10)
}

// StoreLostKey marks that node announced the loss of store's lease (one
// store.lost per loss); the node deletes it when it holds the lease again.
func StoreLostKey(store, node string) string { return "storekeeper:lost:" + store + ":" + node }

// AnnounceScript sets KEYS[1] to ARGV[1] unless it is set, and in the
// same step appends an event and queues a notification, so that a report
// is never recorded as made without being made. A run that finds its own
// value is a copy of a run that did it.
var AnnounceScript = redis.NewScript(`
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

// AutoRestoresKey holds the times of a store's automatic restores in the
// last day (a sorted set: the circuit breaker's memory).
func AutoRestoresKey(store string) string { return "storekeeper:autorestores:" + store }
