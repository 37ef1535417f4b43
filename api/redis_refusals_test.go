package api

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// A Redis that refuses writes for want of memory (maxmemory reached under
// noeviction) is unavailable, not an internal error: 503
// redis_unavailable, naming the cause, and the request can be sent again;
// once Redis has room, the same request is accepted.
func TestRedisOutOfMemoryIsUnavailable(t *testing.T) {
	rdb := redistest.Start(t, redistest.RequireReal()).Client(t) // miniredis has no maxmemory
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}})
	if err := rdb.ConfigSet(t.Context(), "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	rec, a := operatorPost(t, h, "/api/admin/compact/orders", `{}`)
	if rec.Code != 503 || a.Error != "redis_unavailable" || !strings.Contains(a.Message, "OOM") {
		t.Fatalf("enqueue with Redis out of memory: %d %s, want 503 redis_unavailable naming OOM", rec.Code, rec.Body)
	}
	if err := rdb.ConfigSet(t.Context(), "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if rec, _ := operatorPost(t, h, "/api/admin/compact/orders", `{}`); rec.Code != 202 {
		t.Fatalf("enqueue once Redis has room: %d %s, want 202", rec.Code, rec.Body)
	}
}

// A Redis whose password changed under a running process refuses its new
// connections (WRONGPASS): unavailable, naming the cause, not an internal
// error.
func TestRedisRefusingTheProcessIsUnavailable(t *testing.T) {
	srv := redistest.Start(t, redistest.RequireReal())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "old"})
	t.Cleanup(func() { rdb.Close() })
	if err := srv.Client(t).ConfigSet(t.Context(), "requirepass", "rotated").Err(); err != nil {
		t.Fatal(err)
	}
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	rec, a := operatorPost(t, s.Handler(), "/api/admin/compact/orders", `{}`)
	if rec.Code != 503 || a.Error != "redis_unavailable" || !strings.Contains(a.Message, "WRONGPASS") {
		t.Errorf("enqueue with a password Redis no longer takes: %d %s, want 503 redis_unavailable naming WRONGPASS", rec.Code, rec.Body)
	}
}

// A process started without a password, talking to a Redis that now
// requires one, is refused too: NOAUTH for a short command, and for a
// script call (more than ten arguments) a plain ERR naming the protocol,
// which is the same cause and must not be a 500.
func TestRedisRequiringAPasswordIsUnavailable(t *testing.T) {
	srv := redistest.Start(t, redistest.RequireReal())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	if err := srv.Client(t).ConfigSet(t.Context(), "requirepass", "set-later").Err(); err != nil {
		t.Fatal(err)
	}
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	rec, a := operatorPost(t, s.Handler(), "/api/admin/compact/orders", `{}`)
	if rec.Code != 503 || a.Error != "redis_unavailable" || !strings.Contains(a.Message, "unauthenticated") {
		t.Errorf("enqueue without the password Redis now requires: %d %s, want 503 redis_unavailable naming the refusal", rec.Code, rec.Body)
	}
}
