package jobsdb

import (
	"fmt"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// Every node checks every node on each heartbeat: with all of them up
// that takes the same round trips for 1 node as for 60 (issue 19: it was
// one script per known node, N² per beat interval across a deployment).
// A node whose heartbeat expired gets node.down once, however many check.
func TestCheckNodesRoundTripsDoNotGrowWithNodes(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	h := &redistest.RoundTrips{}
	rdb.AddHook(h)
	up := func(n int) {
		for i := range n {
			node := fmt.Sprintf("n%03d", i)
			if err := NodeBeat(t.Context(), rdb, jobs.NodeInfo{Node: node, At: time.Now()}, time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := rdb.SAdd(t.Context(), keyspace.NodesKey, node).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	trips := func() int64 {
		before := h.Total()
		down, err := CheckNodes(t.Context(), rdb, 1000)
		if err != nil || len(down) != 0 {
			t.Fatalf("CheckNodes: %v, %v down", err, down)
		}
		return h.Total() - before
	}
	up(1)
	one := trips()
	up(60)
	if sixty := trips(); sixty != one {
		t.Fatalf("checking 1 node took %d round trips, 60 nodes %d; want the same", one, sixty)
	}
	// n007's heartbeat expires: announced once.
	if err := rdb.Del(t.Context(), keyspace.NodeKey("n007")).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		down, err := CheckNodes(t.Context(), rdb, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[i == 0]; len(down) != want || (want == 1 && down[0] != "n007") {
			t.Fatalf("check %d: down %v, want n007 once", i, down)
		}
	}
}
