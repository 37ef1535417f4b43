package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/config"
	"storekeeper/internal/redistest"
	"storekeeper/internal/syncbuf"
)

// Connecting to a Redis that evicts keys when full warns, naming its
// policy: evicted job records, locks or queued tasks would vanish without
// a trace. noeviction, the default, says nothing.
func TestConnectWarnsOfAnEvictingRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.RequireReal()) // miniredis has no maxmemory-policy
	admin := srv.Client(t)
	connect := func() string {
		t.Helper()
		var logs syncbuf.Buffer
		_, closeRedis, err := connectRedis(config.Redis{Options: &redis.Options{Addr: srv.Addr()}}, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		closeRedis()
		return logs.String()
	}
	if logs := connect(); strings.Contains(logs, "evicts") {
		t.Fatalf("a noeviction Redis was warned of: %s", logs)
	}
	if err := admin.ConfigSet(t.Context(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	if logs := connect(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "maxmemory_policy=allkeys-lru") {
		t.Fatalf("no warning for an evicting Redis: %s", logs)
	}
}

// A Redis Cluster node is refused when the process connects, with a
// message that says why, rather than failing every enqueue later
// (CROSSSLOT).
func TestConnectRefusesARedisClusterNode(t *testing.T) {
	srv := redistest.Start(t, redistest.AsClusterNode())
	_, _, err := connectRedis(config.Redis{Options: &redis.Options{Addr: srv.Addr()}}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "Redis Cluster") {
		t.Fatalf("connecting to a cluster node: %v, want it refused", err)
	}
}
