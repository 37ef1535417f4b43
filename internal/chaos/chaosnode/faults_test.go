package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
)

// The node's network hooks act on its Redis links: a partition holds a
// command until healed (then it runs), a reset breaks the connection, and
// the clock hook moves Now but not durations.
func TestNodeFaultHooks(t *testing.T) {
	srv := redistest.Start(t)
	nf := newNetFaults()
	defer nf.close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Dialer: nf.dial, MaxRetries: -1, ReadTimeout: 300 * time.Millisecond})
	defer rdb.Close()
	ctx := t.Context()
	if err := rdb.Set(ctx, "k", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	if err := nf.set("partition", 0); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Incr(ctx, "k").Err(); err == nil {
		t.Fatal("INCR answered across a partition")
	}
	if got := srv.Client(t).Get(ctx, "k").Val(); got != "1" { // not through the proxy
		t.Fatalf("k = %s during the partition, want 1", got)
	}
	if err := nf.set("heal", 0); err != nil {
		t.Fatal(err)
	}
	// The held INCR reaches Redis after the partition, as after a real one.
	check := srv.Client(t)
	if !testsignal.Poll(testsignal.Timeout, func() bool { return check.Get(ctx, "k").Val() == "2" }) {
		t.Fatal("the INCR held by the partition never arrived")
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("after heal: %v", err)
	}

	if err := nf.set("bogus", 0); err == nil {
		t.Fatal("an unknown mode was accepted")
	}

	c := newShiftedClock()
	c.offset.Store(int64(time.Hour))
	if d := c.Since(time.Now()); d < 59*time.Minute {
		t.Fatalf("Since(now) = %s with the clock an hour ahead", d)
	}
	timer := c.NewTimer(time.Millisecond)
	select {
	case <-timer.Chan():
	case <-time.After(testsignal.Timeout):
		t.Fatal("a 1 ms timer did not fire: timers must run on real durations")
	}
}
