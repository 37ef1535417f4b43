package redistest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A replica receives the primary's writes, and a paused one stops
// acknowledging them: WAIT on the writing connection falls short until
// it is resumed. These are the facts jobsdb's confirmation
// (--redis-min-replicas) rests on.
func TestReplica(t *testing.T) {
	srv := Start(t)
	rep := srv.StartReplica(t)
	ctx := context.Background()
	pc, rc := srv.Client(t), rep.Client(t)

	conn := pc.Conn()
	defer conn.Close()
	if err := conn.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 after a write: %d, %v", n, err)
	}
	if v, err := rc.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("replica has k = %q, %v", v, err)
	}

	if err := rep.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if n, err := conn.Wait(ctx, 1, 200*time.Millisecond).Result(); err != nil || n != 0 {
		t.Fatalf("WAIT 1 with the replica paused: %d, %v; want 0", n, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("WAIT answered in %v, before its timeout", d)
	}
	// WAIT waits for the writes of its own connection (Redis documents
	// no more): a PUBLISH on a new connection is such a write, and it
	// follows every write the primary made before it.
	fresh := pc.Conn()
	defer fresh.Close()
	if err := fresh.Publish(ctx, "redistest:nobody", "").Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := fresh.Wait(ctx, 1, 200*time.Millisecond).Result(); err != nil || n != 0 {
		t.Fatalf("WAIT 1 after a PUBLISH, replica paused: %d, %v; want 0", n, err)
	}

	if err := rep.Resume(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 after resume: %d, %v", n, err)
	}
	if v, err := rc.Get(ctx, "k2").Result(); err != nil || v != "v2" {
		t.Fatalf("replica has k2 = %q, %v after resume", v, err)
	}
}

// tbRecorder is a testing.TB whose Fatalf and Skip end the goroutine
// calling them after recording what they said, so a test can check that
// a helper refuses.
type tbRecorder struct {
	testing.TB
	fatal, skip string
}

func (r *tbRecorder) Helper() {}
func (r *tbRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *tbRecorder) Skip(args ...any) {
	r.skip = fmt.Sprint(args...)
	runtime.Goexit()
}

// run calls f with r in a goroutine of its own and waits for it.
func (r *tbRecorder) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

// On the miniredis fallback there is no replica: the test is skipped,
// saying why, unless redis-server is required, and then it fails.
func TestReplicaNeedsRealServer(t *testing.T) {
	withoutRedisServer(t)
	s := Start(t)
	r := &tbRecorder{TB: t}
	r.run(func(tb testing.TB) { s.StartReplica(tb) })
	if r.fatal != "" || !strings.Contains(r.skip, "miniredis cannot replicate") {
		t.Errorf("fallback: skip %q, fatal %q; want a skip saying why", r.skip, r.fatal)
	}

	t.Setenv(RequireEnv, "1")
	r = &tbRecorder{TB: t}
	r.run(func(tb testing.TB) { s.StartReplica(tb) })
	if r.skip != "" || r.fatal == "" {
		t.Errorf("fallback with %s=1: skip %q, fatal %q; want a failure", RequireEnv, r.skip, r.fatal)
	}
	r = &tbRecorder{TB: t}
	t.Setenv(RequireEnv, "")
	r.run(func(tb testing.TB) { s.StartReplica(tb, RequireReal()) })
	if r.skip != "" || r.fatal == "" {
		t.Errorf("fallback with RequireReal: skip %q, fatal %q; want a failure", r.skip, r.fatal)
	}
}
