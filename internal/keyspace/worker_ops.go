package keyspace

import (
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// The keys and scripts of the worker's own Redis steps (the steps are in
// jobsdb/worker_ops.go).

// LeaseFence is the fencing check of a write by store's owner: the lease
// must still hold value (the claim that made this node the owner).
func LeaseFence(store, value string) LeaseCheck {
	l, _ := jobs.DecodeLease(value) // a value this node's claim wrote
	return LeaseCheck{Key: LeaseKey(store), Value: value, Token: l.Token}
}

// BreakerScript admits an automatic restore when fewer than ARGV[2] were
// admitted in the 24 h before ARGV[1] (ms), and records it as ARGV[3] (the
// incident): the same incident asking again is the same admission.
var BreakerScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 86400000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
`)
