package jobsdb

import (
	"testing"
	"time"

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
