package api

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// A shared copy: read by the first request; served while young; past its
// age, served old while one background refresh runs (a request never
// waits for it); read before answering once three ages old; a background
// refresh ends when the server stops.
func TestSnapshotServesWhileRefreshing(t *testing.T) {
	clock := clockwork.NewFakeClock()
	base, stop := context.WithCancel(t.Context())
	var reads atomic.Int64
	release := make(chan struct{}, 10)
	started := make(chan struct{}, 10)
	c := snapshot[int64]{maxAge: time.Second, clock: clock, base: base, read: func(ctx context.Context) (int64, error) {
		n := reads.Add(1)
		if n > 1 { // the first read answers at once; later ones wait to be let go
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return n, nil
	}}
	get := func() int64 {
		t.Helper()
		v, err := c.get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := get(); v != 1 || get() != 1 {
		t.Fatalf("first reads: %d", v)
	}
	clock.Advance(time.Second)
	if v := get(); v != 1 { // old copy, refresh started
		t.Fatalf("past its age: %d, want the old copy", v)
	}
	<-started
	if v := get(); v != 1 || reads.Load() != 2 {
		t.Fatalf("during the refresh: %d after %d reads; want the old copy and one refresh", v, reads.Load())
	}
	release <- struct{}{}
	c.stop() // waits for the running refresh
	if v := get(); v != 2 {
		t.Fatalf("after the refresh: %d", v)
	}

	clock.Advance(3 * time.Second) // three ages: read before answering
	release <- struct{}{}
	if v := get(); v != 3 {
		t.Fatalf("three ages old: %d, want a fresh read", v)
	}
	<-started

	clock.Advance(time.Second) // a refresh the server's stop ends
	get()
	<-started
	stop()
	c.stop()
	if c.refreshing {
		t.Fatal("a refresh outlived the stop")
	}
}
