package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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

// ErrLayoutMismatch: Redis holds data in a key layout this build does
// not know; the node refuses to start.
var ErrLayoutMismatch = errors.New("redis key layout mismatch")

// layoutScript reads the layout version, writing ARGV[1] first when
// there is none. Safe to run any number of times: a second run finds what
// the first wrote.
var layoutScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// CheckLayout makes sure the data in Redis is in LayoutVersion: it writes
// the version into a Redis that has none, and otherwise returns
// ErrLayoutMismatch naming both versions when they differ. Worker and API
// nodes call it when they start, so nodes of two layouts never share a
// Redis. One round trip.
func CheckLayout(ctx context.Context, rdb redis.Scripter) error {
	return checkLayout(ctx, rdb, LayoutVersion)
}

func checkLayout(ctx context.Context, rdb redis.Scripter, want int) error {
	got, err := layoutScript.Run(ctx, rdb, []string{LayoutKey}, want).Text()
	if err != nil {
		return unavailable(err)
	}
	if got == strconv.Itoa(want) {
		return nil
	}
	if _, err := strconv.Atoi(got); err != nil {
		got = strconv.Quote(got)
	}
	return fmt.Errorf("%w: Redis holds storekeeper key layout version %s (key %s), this build reads and writes version %d: "+
		"nodes of different layouts must not share a Redis; upgrade as docs/design.md says "+
		"(\"Upgrading the Redis layout\": stop every node, upgrade every node and then Redis's layout, start them)", ErrLayoutMismatch, got, LayoutKey, want)
}
