package worker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/faultproxy"
	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// The fault suite: every Redis script on a job's path is held at the
// fault proxy past the client's read timeout, so that go-redis sends it
// again, and then released: Redis runs the first send and every copy, as a
// stalled Redis does. Whatever the step, the job has one fate, told once:
// exactly one terminal state, one history entry, a valid event sequence,
// no notification that is not true, and counters that match the history.

// stallTimeout is the worker's read timeout behind the proxy: short, so a
// held command times out (and is sent again) quickly.
const stallTimeout = 250 * time.Millisecond

// faults is a worker whose Redis client goes through a fault proxy.
type faults struct {
	*bundle
	px *faultproxy.Proxy

	mu    sync.Mutex
	notes []jobs.Notification // as the outbox dispatcher took them
	seen  chan string         // ids of dispatched notifications
}

func setupFaults(t *testing.T, o options, tweak func(*Worker), stores ...string) *faults {
	t.Helper()
	f := &faults{seen: make(chan string, 1024)}
	o.redis = append(o.redis, redistest.RequireReal())
	if o.client == nil {
		o.client = func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
			f.px = faultproxy.Start(t, srv.Addr())
			c := redis.NewClient(&redis.Options{Addr: f.px.Addr(), ReadTimeout: stallTimeout, WriteTimeout: stallTimeout})
			t.Cleanup(func() { c.Close() })
			return c
		}
	}
	f.bundle = setupWith(t, o, func(w *Worker) {
		w.dispatched = func(n jobs.Notification) {
			f.mu.Lock()
			f.notes = append(f.notes, n)
			f.mu.Unlock()
			f.seen <- n.ID
		}
		if tweak != nil {
			tweak(w)
		}
	}, stores...)
	return f
}

// script matches a Lua script run (EVALSHA or EVAL) one of whose
// arguments contains marker: an op id's step ("end:"), a key, an event.
func script(marker string) func(args []string) bool {
	return func(args []string) bool {
		if len(args) == 0 || !strings.EqualFold(args[0], "evalsha") && !strings.EqualFold(args[0], "eval") {
			return false
		}
		return slices.ContainsFunc(args[1:], func(a string) bool { return strings.Contains(a, marker) })
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// release waits until the held script was sent sends times (the first
// send and its retries), then lets every copy through, in order.
func release(t *testing.T, h *faultproxy.Hold, sends int) {
	t.Helper()
	if err := h.Wait(testCtx(t), sends); err != nil {
		t.Fatalf("the held script was sent %d times, want %d: %v", h.Held(), sends, err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if n := h.Forwarded(); n < 2 {
		t.Fatalf("the held script reached Redis %d time(s); the test needs it run at least twice", n)
	}
}

// settled waits until the outbox dispatcher has taken every notification
// written so far: it queues a marker behind them and waits for it (the
// outbox is a queue), so an assertion that some notification was not
// made is made after the point where it would have been.
func (f *faults) settled(t *testing.T) []jobs.Notification {
	t.Helper()
	marker := jobs.Notification{ID: "marker-" + jobs.NewID(), Type: "test.marker", Summary: "marker"}
	push := keyspace.OutboxPush(marker)
	if err := f.rdb.LPush(t.Context(), push.Key, push.Value).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case id := <-f.seen:
			if id != marker.ID {
				continue
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			var out []jobs.Notification
			ids := map[string]bool{}
			for _, n := range f.notes {
				if n.Type != "test.marker" && !ids[n.ID] { // a dispatch tried again is the same notification
					ids[n.ID] = true
					out = append(out, n)
				}
			}
			return out
		case <-deadline:
			t.Fatal("the outbox dispatcher did not reach the marker")
		}
	}
}

// waitTerminal waits for the job's record to reach a terminal state.
func (b *bundle) waitTerminal(t *testing.T, id string) jobs.Record {
	t.Helper()
	var r jobs.Record
	testsignal.WaitFor(t, "job "+id+" ending", func() bool {
		var err error
		r, err = b.client.Get(t.Context(), id)
		return err == nil && r.State.Terminal()
	})
	return r
}

// checkOneFate asserts a finished job's invariants: its state, one history
// entry that agrees with it, a valid event sequence (job.enqueued once and
// first; every job.started followed by exactly one of job.retrying or the
// terminal event; the terminal event once and last; progress only inside
// an attempt) and wantNotes notifications about it.
func (f *faults) checkOneFate(t *testing.T, id string, want jobs.State, wantNotes int) {
	t.Helper()
	rec := f.waitTerminal(t, id)
	if rec.State != want {
		t.Fatalf("job %s ended %s (%s), want %s", id, rec.State, rec.Reason, want)
	}
	h := f.history(t, id)
	if len(h) != 1 {
		t.Fatalf("job %s has %d history entries, want 1: %+v", id, len(h), h)
	}
	evs := f.events(t, id)
	if err := validSequence(evs); err != nil {
		t.Fatalf("job %s: %v: %s", id, err, types(evs))
	}
	var about int
	for _, n := range f.settled(t) {
		if n.JobID == id {
			about++
			if want != jobs.StateFailed || n.Type != jobs.EventJobFailed {
				t.Errorf("job %s (%s) notified %s: %s", id, want, n.Type, n.Summary)
			}
		}
	}
	if about != wantNotes {
		t.Fatalf("job %s: %d notifications, want %d", id, about, wantNotes)
	}
}

// validSequence checks one job's events.
func validSequence(evs []jobs.Event) error {
	if len(evs) == 0 || evs[0].Type != jobs.EventJobEnqueued {
		return errors.New("does not start with job.enqueued")
	}
	terminal := map[jobs.EventType]bool{jobs.EventJobSucceeded: true, jobs.EventJobFailed: true, jobs.EventJobCanceled: true}
	inAttempt, ended := false, false
	for _, e := range evs[1:] {
		if ended {
			return fmt.Errorf("%s after the job ended", e.Type)
		}
		switch {
		case e.Type == jobs.EventJobEnqueued:
			return errors.New("job.enqueued twice")
		case e.Type == jobs.EventJobStarted:
			if inAttempt {
				return errors.New("job.started twice without an end between")
			}
			inAttempt = true
		case e.Type == jobs.EventJobProgress:
			if !inAttempt {
				return errors.New("job.progress outside an attempt")
			}
		case e.Type == jobs.EventJobRetrying:
			if !inAttempt {
				return errors.New("job.retrying without job.started")
			}
			inAttempt = false
		case terminal[e.Type]:
			ended, inAttempt = true, false
		}
	}
	if !ended {
		return errors.New("no terminal event")
	}
	return nil
}

// checkCounters asserts that the worker counted exactly what the history
// holds.
func (f *faults) checkCounters(t *testing.T) {
	t.Helper()
	// The worker counts a job once Redis has answered its end, which can
	// come after the record and history already show it (the reply of a
	// stalled call arrives later): wait for the counters to agree, and
	// say which do not when they never do.
	var diff []string
	if !testsignal.Poll(testsignal.Timeout, func() bool {
		diff = f.counterDiff(t)
		return len(diff) == 0
	}) {
		for _, d := range diff {
			t.Error(d)
		}
	}
}

// counterDiff lists the worker's finished counters that differ from the
// history stream's counts.
func (f *faults) counterDiff(t *testing.T) []string {
	t.Helper()
	all, _, err := jobsdb.History(t.Context(), f.rdb, jobs.HistoryQuery{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]float64{}
	for _, h := range all {
		want[[2]string{string(h.Kind), string(h.Status)}]++
	}
	var diff []string
	for _, k := range jobs.Kinds {
		for _, st := range []jobs.HistoryStatus{jobs.StatusCompacted, jobs.StatusSkipped, jobs.StatusBackedUp, jobs.StatusVerified,
			jobs.StatusFailed, jobs.StatusRestored, jobs.StatusDelivered, jobs.StatusCorrupt, jobs.StatusDrilled} {
			if got := count(f.w.counters.finished.WithLabelValues(string(k), string(st))); got != want[[2]string{string(k), string(st)}] {
				diff = append(diff, fmt.Sprintf("counter %s/%s = %v, history has %v", k, st, got, want[[2]string{string(k), string(st)}]))
			}
		}
	}
	return diff
}

// gate is a handler that waits for the test: started is signalled when it
// runs, and it returns what the test sends on finish.
type gate struct {
	started chan int // attempt numbers
	finish  chan error
}

func newGate() *gate { return &gate{started: make(chan int, 8), finish: make(chan error, 8)} }

func (g *gate) handler(next handlerFunc) handlerFunc {
	return func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
		n, _ := asynq.GetRetryCount(ctx)
		g.started <- n + 1
		store.ReportProgress(ctx, "working", 1, 2)
		select {
		case err := <-g.finish:
			if err != nil {
				return outcome{}, err
			}
		case <-ctx.Done():
			return outcome{}, context.Cause(ctx)
		}
		return next(ctx, s, p)
	}
}

func (g *gate) waitStarted(t *testing.T) int {
	t.Helper()
	select {
	case n := <-g.started:
		return n
	case <-time.After(20 * time.Second):
		t.Fatal("the job did not start")
	}
	return 0
}

// Each step of a job, its script held past the read timeout and then run
// as often as it was sent.
func TestStalledScriptsKeepOneFate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		marker string // which script to hold
		sends  int    // hold until sent this often (4: the call itself gave up)
		fail   error  // the handler's error on its first attempt
		want   jobs.State
		notes  int
	}{
		{name: "start", marker: `start:`, sends: 2, want: jobs.StateSucceeded},
		{name: "start, every send timed out", marker: `start:`, sends: 4, want: jobs.StateSucceeded},
		{name: "progress", marker: `"type":"job.progress"`, sends: 2, want: jobs.StateSucceeded},
		{name: "succeeded", marker: `end:`, sends: 2, want: jobs.StateSucceeded},
		{name: "succeeded, every send timed out", marker: `end:`, sends: 4, want: jobs.StateSucceeded},
		{name: "retrying", marker: `end:`, sends: 2, fail: errors.New("disk hiccup"), want: jobs.StateSucceeded},
		{name: "failed", marker: `end:`, sends: 3, fail: fmt.Errorf("%w: bad", asynq.SkipRetry), want: jobs.StateFailed, notes: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			f := setupFaults(t, options{}, func(w *Worker) { w.handlers[jobs.KindCompact] = g.handler(compactJob) }, "orders")
			h := f.px.Hold(script(tc.marker))
			rec := f.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
			if tc.marker != `start:` {
				f.waitStartedAndFinish(t, g, h, tc.marker, tc.sends, tc.fail)
			} else {
				release(t, h, tc.sends)
				g.waitStarted(t)
				g.finish <- tc.fail
			}
			if tc.fail != nil && tc.want == jobs.StateSucceeded {
				g.waitStarted(t)
				g.finish <- nil
			}
			f.checkOneFate(t, rec.ID, tc.want, tc.notes)
			f.checkCounters(t)
		})
	}
}

// waitStartedAndFinish lets the gated job start, releases it, and lets the
// held script (progress or the attempt's end) through once it was sent
// sends times.
func (f *faults) waitStartedAndFinish(t *testing.T, g *gate, h *faultproxy.Hold, marker string, sends int, fail error) {
	t.Helper()
	g.waitStarted(t)
	if strings.Contains(marker, "progress") {
		release(t, h, sends) // the report is held while the handler waits
		g.finish <- fail
		return
	}
	g.finish <- fail
	release(t, h, sends)
}

// A cancel whose script is held and run several times cancels once.
func TestStalledCancel(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := setupFaults(t, options{}, func(w *Worker) { w.handlers[jobs.KindBackup] = g.handler(backupJob) }, "orders")
	rec := f.enqueue(t, jobs.KindBackup, "orders", jobs.Params{})
	g.waitStarted(t)
	h := f.px.Hold(script("cancel:"))
	canceler := jobsdb.NewClient(f.w.rdb, jobs.ClientConfig{}) // through the proxy
	done := make(chan error, 1)
	go func() { _, err := canceler.Cancel(context.Background(), rec.ID, "bob"); done <- err }()
	release(t, h, 2)
	if err := <-done; err != nil {
		t.Fatalf("cancel sent twice answered %v", err)
	}
	f.checkOneFate(t, rec.ID, jobs.StateCanceled, 0)
	f.checkCounters(t)
}

// An enqueue whose script is held and run several times makes one job.
func TestStalledEnqueue(t *testing.T) {
	t.Parallel()
	f := setupFaults(t, options{}, nil, "orders")
	h := f.px.Hold(script(`"type":"job.enqueued"`))
	c := jobsdb.NewClient(f.w.rdb, jobs.ClientConfig{}) // through the proxy
	done := make(chan jobs.Enqueued, 1)
	go func() {
		got, err := c.Enqueue(context.Background(), jobs.Request{Kind: jobs.KindVerify, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	release(t, h, 2)
	got := <-done
	f.checkOneFate(t, got.Record.ID, jobs.StateSucceeded, 0)
	inflight, _ := f.rdb.Keys(t.Context(), keyspace.RecordKey("*")).Result()
	if len(inflight) != 1 {
		t.Fatalf("%d job records, want 1", len(inflight))
	}
}

// The enqueue stall of the report: the first run of the enqueue script
// writes the record, and a reconciler with no grace left runs before the
// retries do. The record came with its task (the script queues both), so
// the reconciler finds the task in asynq and settles nothing: no false
// job.failed. (Before the task was queued in the same script, the
// reconciler found a record with no task and failed it, and the retry's
// asynq enqueue then ran it: issue 13's second defect.) The job runs once.
func TestEnqueueRetryAfterReconcileRunsOnce(t *testing.T) {
	t.Parallel()
	f := setupFaults(t, options{}, nil, "orders")
	h := f.px.Hold(script(`"type":"job.enqueued"`))
	c := jobsdb.NewClient(f.w.rdb, jobs.ClientConfig{}) // through the proxy, like the API's
	done := make(chan jobs.Enqueued, 1)
	go func() {
		got, err := c.Enqueue(context.Background(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	if err := h.Wait(testCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := h.ReleaseOne(); err != nil { // the first send runs
		t.Fatal(err)
	}
	// The reconciler, with no grace left (its connections are not held).
	rec := f.onlyJob(t)
	if n, err := f.w.reconcile(t.Context(), 0); err != nil || n != 0 {
		t.Fatalf("reconcile settled %d, %v; want none: the job's task is in asynq", n, err)
	}
	if err := h.Release(); err != nil { // then the retries
		t.Fatal(err)
	}
	got := <-done
	if got.Record.ID != rec.ID {
		t.Fatalf("enqueue answered %+v; want the job", got.Record)
	}
	f.checkOneFate(t, rec.ID, jobs.StateSucceeded, 0)
	f.checkCounters(t)
}

// onlyJob returns the one job record in Redis.
func (f *faults) onlyJob(t *testing.T) jobs.Record {
	t.Helper()
	keys, err := f.rdb.Keys(t.Context(), keyspace.RecordKey("*")).Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("job records %v, %v; want one", keys, err)
	}
	r, err := f.client.Get(t.Context(), strings.TrimPrefix(keys[0], keyspace.RecordKey("")))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The reconciler's settle, held and run twice: one failure, one entry.
func TestStalledSettle(t *testing.T) {
	t.Parallel()
	f := setupFaults(t, options{}, nil, "orders")
	f.w.srv.Stop() // takes no task: the one we archive stays archived
	rec := f.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	if err := asynq.NewInspectorFromRedisClient(f.rdb).ArchiveTask(jobs.NodeQueue("n1"), rec.ID); err != nil {
		t.Fatal(err)
	}
	h := f.px.Hold(script("settle:"))
	done := make(chan error, 1)
	go func() { _, err := f.w.reconcile(context.Background(), 0); done <- err }()
	release(t, h, 2)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.checkOneFate(t, rec.ID, jobs.StateFailed, 1)
	f.checkCounters(t)
}

// A corruption report, held and run twice: one store.corrupt, one
// notification, one automatic restore.
func TestStalledIncident(t *testing.T) {
	t.Parallel()
	f := setupFaults(t, options{}, nil, "orders")
	s, _ := f.reg.Store("orders")
	backup := f.enqueue(t, jobs.KindBackup, "orders", jobs.Params{})
	f.waitState(t, backup.ID, jobs.StateSucceeded)
	verify := f.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	f.waitState(t, verify.ID, jobs.StateSucceeded) // the backup is verified: restorable
	h := f.px.Hold(script(keyspace.IncidentKey("orders")))
	f.w.incidents.add("orders", &store.CorruptionError{Store: "orders", Err: errors.New("test: checksum mismatch")})
	release(t, h, 2)
	var corrupt []jobs.Event
	testsignal.WaitFor(t, "store.corrupt", func() bool {
		corrupt = f.eventsOfType(t, jobs.EventStoreCorrupt)
		return len(corrupt) > 0
	})
	if len(corrupt) != 1 || corrupt[0].Action != ActionAutoRestore || corrupt[0].RestoreJobID == "" {
		t.Fatalf("store.corrupt events %+v; want one, restoring", corrupt)
	}
	restore := f.waitTerminal(t, corrupt[0].RestoreJobID)
	if restore.State != jobs.StateSucceeded {
		t.Fatalf("automatic restore %+v", restore)
	}
	notes := f.settled(t)
	var corruptNotes, restoredNotes int
	for _, n := range notes {
		switch n.Type {
		case jobs.EventStoreCorrupt:
			corruptNotes++
		case jobs.EventStoreRestored:
			restoredNotes++
		}
	}
	if corruptNotes != 1 || restoredNotes != 1 {
		t.Fatalf("notifications: %d store.corrupt, %d store.restored; want one of each", corruptNotes, restoredNotes)
	}
	if st, _ := s.State(); st != store.StateOpen {
		t.Fatalf("store %s after the restore", st)
	}
	if n, _ := f.rdb.ZCard(t.Context(), keyspace.AutoRestoresKey("orders")).Result(); n != 1 {
		t.Fatalf("the breaker counted %d automatic restores, want 1", n)
	}
}

func (b *bundle) eventsOfType(t *testing.T, typ jobs.EventType) []jobs.Event {
	t.Helper()
	return b.eventsWhere(t, func(e jobs.Event) bool { return e.Type == typ })
}

// stalledClient is a worker's client straight to srv with short timeouts
// and idle connections kept ready: while Redis is stopped, each retry of a
// command that timed out goes out on an idle connection and waits in
// Redis's socket buffer, as it does in production under load.
func stalledClient(timeout time.Duration) func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
	return func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: timeout, WriteTimeout: timeout, MinIdleConns: 8})
		t.Cleanup(func() { c.Close() })
		return c
	}
}

// monitor counts the scripts Redis runs whose command line contains
// marker, through MONITOR on a connection of its own (raw: go-redis's
// Monitor loses the stream on this server).
func monitor(t *testing.T, srv *redistest.Server, marker string) func() int {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "MONITOR\r\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+OK" {
		t.Fatalf("MONITOR: %q, %v", line, err)
	}
	var n atomic.Int64
	go func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.Contains(line, `"evalsha"`) && strings.Contains(line, marker) {
				n.Add(1)
			}
		}
	}()
	return func() int { return int(n.Load()) }
}

// sendCounter is a connection that counts the writes carrying needle.
type sendCounter struct {
	net.Conn
	needle []byte
	n      *atomic.Int64
}

func (c *sendCounter) Write(p []byte) (int, error) {
	if bytes.Contains(p, c.needle) {
		c.n.Add(1)
	}
	return c.Conn.Write(p)
}

// waitCount waits until count() reaches at least n.
func waitCount(t *testing.T, what string, count func() int, n int) {
	t.Helper()
	testsignal.WaitFor(t, fmt.Sprintf("%s reaching %d", what, n), func() bool { return count() >= n })
}

// The stall of the report: a job's end is sent while Redis is stopped
// (SIGSTOP); go-redis times out and sends it again on other connections;
// Redis, resumed, runs every copy. One job.succeeded, one history entry.
func TestRedisStoppedDuringFinish(t *testing.T) {
	t.Parallel()
	g := newGate()
	f := setupFaults(t, options{client: stalledClient(300 * time.Millisecond)},
		func(w *Worker) { w.handlers[jobs.KindCompact] = g.handler(compactJob) }, "orders")
	rec := f.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	g.waitStarted(t)
	ends := monitor(t, f.srv, `"end:`)
	if err := f.srv.Pause(); err != nil {
		t.Fatal(err)
	}
	g.finish <- nil
	// A real wall-clock wait: the stall itself is what is under test.
	// Redis stays stopped for several of go-redis's read timeouts while
	// the worker sends the end and its retries.
	time.Sleep(1500 * time.Millisecond)
	if err := f.srv.Resume(); err != nil {
		t.Fatal(err)
	}
	f.checkOneFate(t, rec.ID, jobs.StateSucceeded, 0)
	waitCount(t, "runs of the job's end", ends, 2)
	t.Logf("Redis ran the job's end %d times", ends())
	f.checkCounters(t)
}

// The other stall of the report: Redis stops while an enqueue is sent; a
// reconciler runs as soon as Redis is back. Whatever the enqueuer was told,
// the job has one fate: it runs once and succeeds, or it never runs and
// fails, and a terminal state never changes.
func TestRedisStoppedDuringEnqueue(t *testing.T) {
	t.Parallel()
	f := setupFaults(t, options{client: stalledClient(3 * time.Second)}, nil, "orders")
	// The enqueuer's connections count what they send of the enqueue
	// script (its SHA), and its dials: Redis is resumed once go-redis,
	// its read timed out, retries the script: on a pooled connection (a
	// second send) or on a new one, whose handshake waits for Redis (a
	// dial after the first send).
	var sent atomic.Int64
	var redialed atomic.Bool
	sha := []byte(keyspace.EnqueueScript.Hash())
	enqueuer := redis.NewClient(&redis.Options{Addr: f.srv.Addr(), ReadTimeout: time.Second, WriteTimeout: time.Second, MinIdleConns: 4,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if sent.Load() > 0 {
				redialed.Store(true)
			}
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &sendCounter{Conn: conn, needle: sha, n: &sent}, nil
		}})
	t.Cleanup(func() { enqueuer.Close() })
	c := jobsdb.NewClient(enqueuer, jobs.ClientConfig{})
	if err := jobsdb.LoadScripts(t.Context(), enqueuer); err != nil {
		t.Fatal(err)
	}
	enqueues := monitor(t, f.srv, `job.enqueued`)
	if err := f.srv.Pause(); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		got jobs.Enqueued
		err error
	}
	done := make(chan answer, 1)
	go func() {
		got, err := c.Enqueue(context.Background(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
		done <- answer{got, err}
	}()
	// Redis stays stopped until the enqueuer retries (a fixed wait of
	// 1.2 s, 200 ms past its read timeout, was not always enough on a
	// loaded CI machine).
	testsignal.WaitFor(t, "the enqueuer retrying the script while Redis is stopped", func() bool {
		return sent.Load() >= 2 || (sent.Load() == 1 && redialed.Load())
	})
	if err := f.srv.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.w.reconcile(t.Context(), time.Second); err != nil {
		t.Fatal(err)
	}
	a := <-done
	waitCount(t, "runs of the enqueue script", enqueues, 2)
	t.Logf("Redis ran the enqueue script %d times; the enqueuer was told %v", enqueues(), a.err)
	rec := f.onlyJob(t)
	switch {
	case a.err == nil:
		// The script's first run wrote the record and its task: the
		// answer to the retry is the record as it is by then (pending,
		// or already started or ended by the worker).
		if a.got.Record.ID != rec.ID {
			t.Fatalf("enqueue answered %+v", a.got.Record)
		}
		f.checkOneFate(t, rec.ID, jobs.StateSucceeded, 0)
	default:
		// Told it failed (503): the job must never run, and ends failed
		// once the reconciler's grace has passed on Redis's clock.
		if !errors.Is(a.err, jobs.ErrUnavailable) {
			t.Fatalf("enqueue: %v", a.err)
		}
		f.waitSettled(t, rec.ID)
		f.checkOneFate(t, rec.ID, jobs.StateFailed, 1)
	}
	f.checkCounters(t)
}

// waitSettled runs the reconciler until it settles the job: once its
// grace has passed on Redis's clock.
func (f *faults) waitSettled(t *testing.T, id string) {
	t.Helper()
	testsignal.WaitFor(t, "the reconciler settling job "+id, func() bool {
		if _, err := f.w.reconcile(t.Context(), time.Second); err != nil {
			t.Fatal(err)
		}
		r, err := f.client.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return r.State.Terminal()
	})
}
