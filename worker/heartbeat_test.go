package worker

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// A heartbeat renews every held lease and publishes every store's status
// in the same number of round trips whether the node holds one store or
// many (issue 19: at 1,000 nodes x 100 stores, one round trip per store
// per beat was 20,000 a second).
func TestHeartbeatRoundTripsDoNotGrowWithStores(t *testing.T) {
	trips := func(stores int) (int64, *bundle) {
		h := &redistest.RoundTrips{OnlyMarked: true}
		names := make([]string, stores)
		for i := range names {
			names[i] = fmt.Sprintf("s%02d", i)
		}
		b := setupWith(t, options{client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
			c := srv.Client(t)
			c.AddHook(h)
			return c
		}}, nil, names...)
		ctx := redistest.Mark(t.Context())
		b.w.renew(ctx) // once to settle anything the first beat does once
		before := h.Total()
		b.w.renew(ctx)
		return h.Total() - before, b
	}
	one, _ := trips(1)
	many, b := trips(12)
	if many != one {
		t.Fatalf("a heartbeat took %d round trips with one store, %d with twelve; want the same", one, many)
	}
	// And it did renew and publish: every store's status is there, under
	// this node.
	names := b.w.cfg.Registry.Names()
	raw, err := jobsdb.PublishedStatus(t.Context(), b.rdb, names)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range raw {
		if r == nil {
			t.Fatalf("%s: nothing published", names[i])
		}
		if st, _, err := jobsdb.RenewLease(t.Context(), b.rdb, names[i], "someone else", b.w.cfg.LeaseTTL); err != nil || st != jobs.LeaseTaken {
			t.Fatalf("%s: lease %v %v; want held by the node", names[i], st, err)
		}
	}
	t.Logf("%d round trips per heartbeat, stores or not", one)
}

// With many nodes, each worker looks for down nodes only every
// known/nodeCheckers beats (each look reads every node): about
// nodeCheckers looks per beat interval across the deployment. With few,
// every beat looks.
func TestFewerLooksForDownNodesWithManyNodes(t *testing.T) {
	h := &redistest.RoundTrips{OnlyMarked: true}
	b := setupWith(t, options{client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
		c := srv.Client(t)
		c.AddHook(h)
		return c
	}}, nil, "orders")
	ctx := redistest.Mark(t.Context())
	looks := func(known int64, beats int) int64 {
		before := h.Total()
		for range beats {
			b.w.knownNodes.Store(known) // as if the last look had found that many
			b.w.checkNodes(ctx)
		}
		return h.Total() - before
	}
	if n := looks(1, 20); n < 20 {
		t.Fatalf("one node known: %d round trips over 20 beats, want a look every beat", n)
	}
	perLook := looks(1, 1)
	if n := looks(100*nodeCheckers, 100); n != perLook {
		t.Fatalf("%d nodes known: %d round trips over 100 beats, want one look (%d)", 100*nodeCheckers, n, perLook)
	}
}
