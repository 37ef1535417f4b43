package keyspace

import (
	"github.com/redis/go-redis/v9"
)

// LayoutKey holds the version of the key layout (keys.go) that the data in
// this Redis is written in. The first node to start writes it; every node
// checks it when it starts (CheckLayout).
const LayoutKey = "storekeeper:layout"

// LayoutVersion is the key layout this build reads and writes. It changes
// with any change to a key's name, type or value format, or to what a
// script expects to find, that a node of the previous version would
// misread. A Redis without LayoutKey is taken to be in this version: the
// layout before the key existed is version 1.
const LayoutVersion = 1

// LayoutScript reads the layout version, writing ARGV[1] first when
// there is none. Safe to run any number of times: a second run finds what
// the first wrote.
var LayoutScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)
