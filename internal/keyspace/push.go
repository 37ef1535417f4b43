package keyspace

import (
	"github.com/redis/go-redis/v9"
)

// VAPIDKey holds the deployment's JSON VAPIDKeys, set once (SET NX).
// Deleting it makes a new pair on next use, and every subscription made
// with the old public key stops working.
const VAPIDKey = "storekeeper:push:vapid"

// PushSubscriptionsKey holds the browsers subscribed to Web Push:
// PushSubscriptionID(owner, endpoint) -> JSON PushSubscriptionRecord;
// PushOwnerKey(owner) indexes each owner's.
const PushSubscriptionsKey = "storekeeper:push:subscriptions"

// PushOwnerKey is the set of the ids of owner's subscriptions, the index
// that bounds them per token.
func PushOwnerKey(owner string) string { return "storekeeper:push:owner:" + owner }

// PushMovedKey maps the first layout's ids to the ids their subscriptions
// were moved to, so a notify job queued before the move still finds its
// browser. It expires a week after the last move.
const PushMovedKey = "storekeeper:push:moved"

// pruneOwnerLua drops from the owner's set (KEYS[2]) the ids whose
// subscription is gone from KEYS[1] (forgotten by a node of the first
// layout, which did not keep the set).
const pruneOwnerLua = `
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], m) == 0 then redis.call('SREM', KEYS[2], m) end
end
`

// SubscribeScript keeps subscription ARGV[1] (JSON ARGV[2]) in KEYS[1] and
// in its owner's set KEYS[2], unless it is new and the owner has ARGV[3]
// already: 1 kept, 0 refused.
var SubscribeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
` + pruneOwnerLua + `
  if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
`)

// ForgetScript deletes subscription ARGV[1] from KEYS[1] and from its
// owner's set KEYS[2]: 1 deleted, 0 there was none.
var ForgetScript = redis.NewScript(`
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n
`)

// MigrateScript moves first-layout entry ARGV[1] (still ARGV[2], or
// nothing is done: -1) to ARGV[3] (JSON ARGV[4]) in KEYS[1] and the
// owner's set KEYS[2], unless the owner has ARGV[5] already (2, dropped)
// or its own entry of that endpoint (0, kept); an entry with no owner
// (ARGV[3] empty) is dropped. KEYS[3] maps the old id to the new for
// ARGV[6] seconds.
var MigrateScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] == '' then return 2 end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
` + pruneOwnerLua + `
  if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1
`)
