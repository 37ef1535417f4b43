package jobsdb

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// CheckLayout makes sure the data in Redis is in LayoutVersion: it writes
// the version into a Redis that has none, and otherwise returns
// ErrLayoutMismatch naming both versions when they differ. Worker and API
// nodes call it when they start, so nodes of two layouts never share a
// Redis. One round trip.
func CheckLayout(ctx context.Context, rdb redis.Scripter) error {
	return checkLayout(ctx, rdb, keyspace.LayoutVersion)
}

func checkLayout(ctx context.Context, rdb redis.Scripter, want int) error {
	got, err := keyspace.LayoutScript.Run(ctx, rdb, []string{keyspace.LayoutKey}, want).Text()
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
		"(\"Upgrading the Redis layout\": stop every node, upgrade every node and then Redis's layout, start them)", jobs.ErrLayoutMismatch, got, keyspace.LayoutKey, want)
}
