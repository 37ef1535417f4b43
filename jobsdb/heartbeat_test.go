package jobsdb

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// Heartbeat renews and publishes under a held lease, refuses both under
// one another claim took, and works on a Redis that lost its scripts (a
// restart or a failover since the node loaded them).
func TestHeartbeat(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	mine, ok, err := ClaimLease(ctx, rdb, "a", jobs.Lease{Node: "n1", Host: "h", Instance: "i1"}, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	theirs, ok, err := ClaimLease(ctx, rdb, "b", jobs.Lease{Node: "n2", Host: "h", Instance: "i2"}, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := Heartbeat(ctx, rdb, []Beat{{Store: "a", Lease: mine, Status: `{"a":1}`}, {Store: "b", Lease: mine, Status: `{"b":1}`}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != (BeatResult{State: jobs.LeaseHeld, Published: true}) || got[1] != (BeatResult{State: jobs.LeaseTaken, Holder: theirs}) {
		t.Fatalf("heartbeat %+v; want a held and published, b taken by %s and not published", got, theirs)
	}
	raw, err := PublishedStatus(ctx, rdb, []string{"a", "b"})
	if err != nil || string(raw[0]) != `{"a":1}` || raw[1] != nil {
		t.Fatalf("published %q, %v", raw, err)
	}
}

// A heartbeat sends one script per beatChunk stores, not two per store
// (the old pipeline's 2,000 EVALSHAs for 1,000 stores were most of
// Redis's time at 1,000 nodes × 100 stores), and its answers still line
// up with the stores: held and published, expired, taken, in order, sent
// twice with the same result.
func TestHeartbeatScriptsPerBeat(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	counter := &scriptCalls{}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	rdb.AddHook(counter)
	const n = 1000
	beats := make([]Beat, n)
	other, ok, err := ClaimLease(ctx, rdb, "s0500", jobs.Lease{Node: "n2", Host: "h", Instance: "i2"}, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	for i := range beats {
		name := fmt.Sprintf("s%04d", i)
		beats[i] = Beat{Store: name, Lease: "n1 lease", Status: fmt.Sprintf(`{"i":%d}`, i)}
		if i != 500 && i != 999 {
			if err := rdb.Set(ctx, keyspace.LeaseKey(name), "n1 lease", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := LoadScripts(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		counter.n.Store(0)
		got, err := Heartbeat(ctx, rdb, beats, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if calls, want := counter.n.Load(), int64((n+beatChunk-1)/beatChunk); calls != want {
			t.Fatalf("%d scripts for %d stores, want %d", calls, n, want)
		}
		if len(got) != n || got[0] != (BeatResult{State: jobs.LeaseHeld, Published: true}) ||
			got[500] != (BeatResult{State: jobs.LeaseTaken, Holder: other}) || got[999] != (BeatResult{State: jobs.LeaseExpired}) {
			t.Fatalf("%d results; 0: %+v, 500: %+v, 999: %+v", len(got), got[0], got[500], got[999])
		}
		raw, err := PublishedStatus(ctx, rdb, []string{"s0001", "s0500", "s0999"})
		if err != nil || string(raw[0]) != `{"i":1}` || raw[1] != nil || raw[2] != nil {
			t.Fatalf("published %q, %v", raw, err)
		}
	}
}

// scriptCalls counts the scripts sent, alone or in pipelines.
type scriptCalls struct{ n atomic.Int64 }

func (*scriptCalls) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *scriptCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd) {
			s.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (s *scriptCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if isScript(c) {
				s.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}
