package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

type bundle struct {
	rdb    *redis.Client // straight to Redis, for the test's own reads
	srv    *redistest.Server
	reg    *store.Registry
	w      *Worker
	client *jobsdb.Client
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// setup starts a private Redis, a registry with stores, and a worker with
// fast polling and retries; tweak edits the worker before it starts.
func setup(t *testing.T, tweak func(*Worker), stores ...string) *bundle {
	t.Helper()
	return setupWith(t, options{}, tweak, stores...)
}

// options change a test worker's configuration before it is made.
type options struct {
	worker func(*Config)
	store  func(*store.Config)
	redis  []redistest.Option
	// client is the worker's Redis client (default: straight to srv).
	client func(t *testing.T, srv *redistest.Server) redis.UniversalClient
}

func setupWith(t *testing.T, o options, tweak func(*Worker), stores ...string) *bundle {
	t.Helper()
	srv := redistest.Start(t, o.redis...)
	rdb := srv.Client(t)
	var wrdb redis.UniversalClient = rdb
	if o.client != nil {
		wrdb = o.client(t, srv)
	}
	root := t.TempDir()
	scfg := store.Config{DataDir: filepath.Join(root, "data"), BackupDir: filepath.Join(root, "backups"),
		Stores: stores, NoSync: true, Logger: quietLogger()}
	if o.store != nil {
		o.store(&scfg)
	}
	reg, err := store.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Redis: wrdb, Registry: reg, Node: "n1", TaskCheckInterval: 10 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond, RetryDelay: func(int) time.Duration { return 10 * time.Millisecond },
		ShutdownTimeout: time.Second, Logger: quietLogger(),
		// Nothing scheduled unless a test asks: the defaults are days apart anyway.
		Schedules: map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off"}}
	if o.worker != nil {
		o.worker(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(w)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(); reg.Close() })
	return &bundle{rdb: rdb, srv: srv, reg: reg, w: w, client: jobsdb.NewClient(rdb, jobs.ClientConfig{})}
}

func (b *bundle) enqueue(t *testing.T, kind jobs.Kind, st string, params jobs.Params) jobs.Record {
	t.Helper()
	got, err := b.client.Enqueue(t.Context(), jobs.Request{Kind: kind, Store: st, Params: params, Trigger: jobs.TriggerManual, Actor: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	return got.Record
}

// waitState polls the job record until it reaches state, with a deadline.
func (b *bundle) waitState(t *testing.T, id string, state jobs.State) jobs.Record {
	t.Helper()
	var r jobs.Record
	testsignal.WaitFor(t, fmt.Sprintf("job %s reaching %s", id, state), func() bool {
		var err error
		r, err = b.client.Get(t.Context(), id)
		return err == nil && r.State == state
	})
	return r
}

func (b *bundle) events(t *testing.T, id string) []jobs.Event {
	t.Helper()
	return b.eventsWhere(t, func(e jobs.Event) bool { return e.JobID == id })
}

// eventsWhere returns the events in the stream that keep accepts.
func (b *bundle) eventsWhere(t *testing.T, keep func(jobs.Event) bool) []jobs.Event {
	t.Helper()
	all, err := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 10000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []jobs.Event
	for _, e := range all {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

func types(evs []jobs.Event) string {
	s := ""
	for _, e := range evs {
		s += string(e.Type) + " "
	}
	return s
}

func (b *bundle) history(t *testing.T, id string) []jobs.HistoryEntry {
	t.Helper()
	all, _, err := jobsdb.History(t.Context(), b.rdb, jobs.HistoryQuery{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var out []jobs.HistoryEntry
	for _, h := range all {
		if h.JobID == id {
			out = append(out, h)
		}
	}
	return out
}

func TestJobLifecycle(t *testing.T) {
	// The job outlives progress's first window (100 ms), as any job worth
	// watching does, so the compaction's phases are published: the fake
	// clock moves past the window before the compaction starts.
	clock := clockwork.NewFakeClock()
	b := setupWith(t, options{worker: func(c *Config) { c.Clock = clock }}, func(w *Worker) {
		w.handlers[jobs.KindCompact] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			clock.Advance(progressMin)
			return compactJob(ctx, s, p)
		}
	}, "orders")
	s, _ := b.reg.Store("orders")
	for i := range 3000 {
		_ = s.Set(fmt.Appendf(nil, "k%05d", i), make([]byte, 100))
	}
	rec := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	done := b.waitState(t, rec.ID, jobs.StateSucceeded)
	if done.Attempts != 1 || done.StartedAt.IsZero() || done.FinishedAt.IsZero() || len(done.Result) == 0 || done.Node != "n1" {
		t.Fatalf("record %+v", done)
	}
	evs := b.events(t, rec.ID)
	var progress []jobs.Event
	var rest []jobs.Event
	for _, e := range evs {
		if e.Type == jobs.EventJobProgress {
			progress = append(progress, e)
		} else {
			rest = append(rest, e)
		}
	}
	if got := types(rest); got != "job.enqueued job.started job.succeeded " {
		t.Fatalf("events: %s", types(evs))
	}
	if len(progress) == 0 || evs[0].Type != jobs.EventJobEnqueued || evs[1].Type != jobs.EventJobStarted || evs[len(evs)-1].Type != jobs.EventJobSucceeded {
		t.Fatalf("job.progress missing or out of order: %s", types(evs))
	}
	if progress[0].Phase == "" || progress[0].Attempt != 1 {
		t.Fatalf("progress event %+v", progress[0])
	}
	h := b.history(t, rec.ID)
	if len(h) != 1 || h[0].Status != jobs.StatusCompacted || h[0].Actor != "tester" || h[0].Trigger != jobs.TriggerManual ||
		h[0].Attempts != 1 || h[0].Node != "n1" || h[0].BytesBefore == 0 || h[0].Store != "orders" || h[0].Kind != jobs.KindCompact {
		t.Fatalf("history %+v", h)
	}
	if ttl := b.rdb.TTL(t.Context(), keyspace.RecordKey(rec.ID)).Val(); ttl <= 0 {
		t.Fatalf("finished record has no retention TTL (%v)", ttl)
	}
	if n, _ := b.rdb.Exists(t.Context(), keyspace.StatsKey("orders")).Result(); n != 1 {
		t.Fatal("stats not published")
	}
	// The lock is gone: the same request is a new job.
	again := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	if again.ID == rec.ID {
		t.Fatal("a finished job was returned as in flight")
	}
	b.waitState(t, again.ID, jobs.StateSucceeded)
}

func TestRetryThenSuccess(t *testing.T) {
	var calls atomic.Int32
	b := setup(t, func(w *Worker) {
		w.handlers[jobs.KindCompact] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			if calls.Add(1) <= 2 {
				return outcome{}, errors.New("transient trouble")
			}
			return outcome{Status: jobs.StatusSkipped, Reason: "fine now"}, nil
		}
	}, "orders")
	rec := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{})
	done := b.waitState(t, rec.ID, jobs.StateSucceeded)
	if done.Attempts != 3 || len(done.Errors) != 2 || done.Errors[1].Attempt != 2 {
		t.Fatalf("record %+v", done)
	}
	want := "job.enqueued job.started job.retrying job.started job.retrying job.started job.succeeded "
	if got := types(b.events(t, rec.ID)); got != want {
		t.Fatalf("events: %s\nwant:   %s", got, want)
	}
	if h := b.history(t, rec.ID); len(h) != 1 || h[0].Attempts != 3 {
		t.Fatalf("history %+v", h)
	}
}

func TestPermanentErrorRunsOnce(t *testing.T) {
	var calls atomic.Int32
	b := setup(t, func(w *Worker) {
		w.handlers[jobs.KindRestore] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			calls.Add(1)
			return w.restoreJob(ctx, s, p)
		}
	}, "orders")
	rec := b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{}) // no backup exists
	done := b.waitState(t, rec.ID, jobs.StateFailed)
	if calls.Load() != 1 || done.Attempts != 1 || len(done.Errors) != 1 {
		t.Fatalf("ran %d times; record %+v", calls.Load(), done)
	}
	if got := types(b.events(t, rec.ID)); got != "job.enqueued job.started job.failed " {
		t.Fatalf("events: %s", got)
	}
	if h := b.history(t, rec.ID); len(h) != 1 || h[0].Status != jobs.StatusFailed || h[0].Error == "" {
		t.Fatalf("history %+v", h)
	}
	// Its locks went with it.
	if _, err := b.client.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindRestore, Store: "orders", Params: jobs.Params{BackupID: "x"}, Trigger: jobs.TriggerManual, Actor: "a"}); err != nil {
		t.Fatalf("restore lock not released: %v", err)
	}
}

func TestCancelIsFinal(t *testing.T) {
	started := make(chan struct{}, 1)
	var calls atomic.Int32
	b := setup(t, func(w *Worker) {
		w.handlers[jobs.KindBackup] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			calls.Add(1)
			started <- struct{}{}
			<-ctx.Done()
			return outcome{}, ctx.Err()
		}
	}, "orders")
	rec := b.enqueue(t, jobs.KindBackup, "orders", jobs.Params{})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("job did not start")
	}
	got, err := b.client.Cancel(t.Context(), rec.ID, "bob")
	if err != nil || got.State != jobs.StateCanceled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	// The store is free at once: another job on it runs.
	next := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, next.ID, jobs.StateSucceeded)
	if calls.Load() != 1 {
		t.Fatalf("canceled job ran %d times", calls.Load())
	}
	if r, _ := b.client.Get(t.Context(), rec.ID); r.State != jobs.StateCanceled {
		t.Fatalf("canceled record became %s", r.State)
	}
	if got := types(b.events(t, rec.ID)); got != "job.enqueued job.started job.canceled " {
		t.Fatalf("events: %s", got)
	}
	if h := b.history(t, rec.ID); len(h) != 1 || h[0].Status != jobs.StatusCanceled {
		t.Fatalf("history %+v", h)
	}
	if _, err := b.client.Cancel(t.Context(), rec.ID, "bob"); !errors.Is(err, jobs.ErrFinished) {
		t.Fatalf("second Cancel = %v, want ErrFinished", err)
	}
}

// compact, backup and restore on one store never overlap.
func TestOneJobPerStore(t *testing.T) {
	var active, peak atomic.Int32
	var insp *asynq.Inspector
	enqueued := make(chan struct{})
	wrap := func(h handlerFunc) handlerFunc {
		return func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			n := active.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			defer active.Add(-1)
			// Hold the store until asynq has handed out every task (four
			// workers, four jobs): the others are in the worker, at the
			// store's slot, and would be here if it let them.
			<-enqueued
			if !testsignal.Poll(testsignal.Timeout, func() bool {
				info, err := insp.GetQueueInfo(jobs.NodeQueue("n1"))
				return err == nil && info.Pending == 0
			}) {
				return outcome{}, errors.New("asynq kept tasks pending")
			}
			return h(ctx, s, p)
		}
	}
	b := setup(t, func(w *Worker) {
		for k, h := range w.handlers {
			w.handlers[k] = wrap(h)
		}
	}, "orders")
	s, _ := b.reg.Store("orders")
	_ = s.Set([]byte("k"), []byte("v"))
	if _, err := s.Backup(t.Context()); err != nil {
		t.Fatal(err)
	}
	insp = asynq.NewInspectorFromRedisClient(b.rdb)
	var ids []string
	for _, k := range []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindRestore, jobs.KindVerify} {
		ids = append(ids, b.enqueue(t, k, "orders", jobs.Params{}).ID)
	}
	close(enqueued)
	for _, id := range ids {
		b.waitState(t, id, jobs.StateSucceeded)
	}
	if peak.Load() != 1 {
		t.Fatalf("%d jobs ran on one store at once", peak.Load())
	}
}

// A second node with a store of the same name does not refuse to start:
// it serves its other stores and holds that one as lost, refusing writes
// and running no job on it, while the first node keeps it.
func TestSecondNodeHoldsStoreAsLost(t *testing.T) {
	b := setup(t, nil, "orders")
	root := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: root, Stores: []string{"orders", "other"}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	w2, err := New(Config{Redis: b.rdb, Registry: reg, Node: "n2", Logger: quietLogger(),
		Schedules: map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Start(t.Context()); err != nil {
		t.Fatalf("second node Start = %v, want it to start", err)
	}
	defer w2.Shutdown()
	if lost := w2.Lost(); lost["orders"] != "n1" || len(lost) != 1 {
		t.Fatalf("n2 lost %v, want orders held by n1", lost)
	}
	s, _ := reg.Store("orders")
	if err := s.Set([]byte("k"), []byte("v")); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("write to a lost store: %v, want ErrNotOwner", err)
	}
	if !w2.serving("other") {
		t.Fatal("n2 does not serve its other store")
	}
	// The store stays n1's: jobs go there, and run.
	if owner := b.rdb.HGet(t.Context(), keyspace.StoresKey, "orders").Val(); owner != "n1" {
		t.Fatalf("owner %s, want n1", owner)
	}
	rec := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, rec.ID, jobs.StateSucceeded)
	var lost []jobs.Event
	for _, e := range b.events(t, "") {
		if e.Type == jobs.EventStoreLost {
			lost = append(lost, e)
		}
	}
	if len(lost) != 1 || lost[0].Store != "orders" || lost[0].Node != "n2" || lost[0].Holder != "n1" {
		t.Fatalf("store.lost events %+v", lost)
	}
}

// Shutdown: asynq first (its timeout, then it requeues), then running
// handlers are cancelled; their records read retry, reason interrupted,
// and nothing counts as a failure.
func TestShutdownInterrupts(t *testing.T) {
	started := make(chan struct{}, 1)
	b := setup(t, func(w *Worker) {
		w.handlers[jobs.KindBackup] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			started <- struct{}{}
			<-ctx.Done()
			return outcome{}, ctx.Err()
		}
	}, "orders")
	rec := b.enqueue(t, jobs.KindBackup, "orders", jobs.Params{})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("job did not start")
	}
	b.w.Shutdown()
	got, err := b.client.Get(t.Context(), rec.ID)
	if err != nil || got.State != jobs.StateRetry || got.Reason != "interrupted" || len(got.Errors) != 0 {
		t.Fatalf("record after shutdown: %+v, %v", got, err)
	}
	if evs := types(b.events(t, rec.ID)); evs != "job.enqueued job.started job.retrying " {
		t.Fatalf("events after shutdown: %s", evs)
	}
	info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo(jobs.NodeQueue("n1"), rec.ID)
	if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
		t.Fatalf("task after shutdown: %+v, %v", info, err)
	}
}

// Redis killed and restarted (AOF): the worker reconnects and runs what
// was accepted before and after.
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.RequireReal(), redistest.WithAOF("always"))
	rdb := srv.Client(t)
	root := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: filepath.Join(root, "data"), Stores: []string{"orders"}, NoSync: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	w, err := New(Config{Redis: rdb, Registry: reg, Node: "n1", TaskCheckInterval: 10 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond, RetryDelay: func(int) time.Duration { return 10 * time.Millisecond }, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	b := &bundle{rdb: rdb, reg: reg, w: w, client: jobsdb.NewClient(rdb, jobs.ClientConfig{})}
	first := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, first.ID, jobs.StateSucceeded)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindVerify, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"}); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("enqueue with Redis down = %v, want ErrUnavailable", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// go-redis stops dialing after PoolSize failed dials and probes once
	// a second, so the client may answer "unavailable" for up to a second
	// after Redis is back.
	var r jobs.Record
	testsignal.WaitForWithin(t, 5*time.Second, "the client reconnecting", func() bool {
		r, err = b.client.Get(t.Context(), first.ID)
		return !errors.Is(err, jobs.ErrUnavailable)
	})
	if err != nil || r.State != jobs.StateSucceeded {
		t.Fatalf("record lost across the Redis restart: %+v, %v", r, err)
	}
	second := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{})
	b.waitState(t, second.ID, jobs.StateSucceeded)
}

// However often a store reports, a job publishes a few progress events a
// second: nothing in its first 100 ms, then one per 250 ms in a phase and
// one per 100 ms across a phase change; a report held back goes out when
// its window opens, unless a later one replaced it or went out first; and
// nothing follows stop. The clock is fake, so every count is exact; each
// window that opens signals whether it published.
func TestProgressIsThrottled(t *testing.T) {
	clock := clockwork.NewFakeClock()
	b := setupWith(t, options{worker: func(c *Config) { c.Clock = clock }},
		func(w *Worker) { w.signals.progressFlushed.Init(t) }, "orders")
	// Progress is appended only for the active run of a job's record.
	b.rdb.HSet(t.Context(), keyspace.RecordKey("jthrottle"), "id", "jthrottle", "state", "active", "run", "r1")
	report, stop := b.w.progressReporter(t.Context(), attempt{p: jobs.Payload{JobID: "jthrottle"}, n: 1, run: "r1"})
	flushed := func(want bool) {
		t.Helper()
		if got := b.w.signals.progressFlushed.Wait(); got != want {
			t.Fatalf("a window opened and published: %v, want %v", got, want)
		}
	}
	check := func(when string, want ...string) {
		t.Helper()
		var got []string
		for _, e := range b.events(t, "jthrottle") {
			got = append(got, fmt.Sprintf("%s %d", e.Phase, e.Done))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: progress events %q, want %q", when, got, want)
		}
	}

	report("checkpoint", 0, 0)
	report("validating", 0, 0) // replaces the held-back checkpoint
	clock.Advance(progressMin - time.Millisecond)
	check("in the job's first 100 ms")
	clock.Advance(time.Millisecond)
	flushed(true)
	check("when the first window opened", "validating 0")

	// A burst at one instant: held back, the last one goes out when its
	// window opens (a phase change's 100 ms, counted from the last event,
	// waits for the 250 ms timer armed by the first held report).
	for i := range 1000 {
		report("validating", int64(i), 1000)
	}
	report("copying", 1000, 1000)
	clock.Advance(progressEvery)
	flushed(true)
	check("after a burst", "validating 0", "copying 1000")

	// A phase change due at once goes out at once, and drops what was
	// held back; the window armed for that finds nothing.
	report("copying", 1, 3)
	clock.Advance(progressMin)
	report("copying", 2, 3)
	report("validating", 3, 3)
	check("after a phase change", "validating 0", "copying 1000", "validating 3")
	clock.Advance(progressEvery - progressMin)
	flushed(false)

	// Nothing follows stop: not what was held back, not a later report.
	report("validating", 4, 5)
	stop()
	report("validating", 5, 5)
	clock.Advance(progressEvery)
	flushed(false)
	check("after stop", "validating 0", "copying 1000", "validating 3")
	b.w.signals.progressFlushed.RequireEmpty()
}

// A task asynq archived or lost without the worker is settled: the record
// fails, the locks go, job.failed and a history entry are written.
func TestReconcile(t *testing.T) {
	// The outbox dispatcher waits until the first reconcile is over: a
	// notify job whose record is written but not yet handed to asynq is,
	// with a grace of 0, one asynq lost, and reconcile would settle it too.
	reconciled := make(chan struct{})
	b := setupWith(t, options{worker: func(c *Config) {
		c.Webhooks = []Webhook{{URL: "http://127.0.0.1:9/hook", Secret: "s"}} // never reached: asynq is stopped
	}}, func(w *Worker) {
		w.handlers[jobs.KindBackup] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			<-ctx.Done()
			return outcome{}, ctx.Err()
		}
		w.dispatched = func(jobs.Notification) {
			select {
			case <-reconciled:
			case <-t.Context().Done():
			}
		}
	}, "orders")
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	// Stop the worker from taking tasks, so they stay where we put them.
	b.w.srv.Stop()
	archived := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	if err := insp.ArchiveTask(jobs.NodeQueue("n1"), archived.ID); err != nil {
		t.Fatal(err)
	}
	gone := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{})
	if err := insp.DeleteTask(jobs.NodeQueue("n1"), gone.ID); err != nil {
		t.Fatal(err)
	}
	waiting := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	n, err := b.w.reconcile(t.Context(), 0)
	close(reconciled)
	if err != nil || n != 2 {
		t.Fatalf("reconcile settled %d, %v; want 2", n, err)
	}
	for _, kind := range []jobs.Kind{jobs.KindVerify, jobs.KindCompact} {
		if n := count(b.w.counters.finished.WithLabelValues(string(kind), string(jobs.StatusFailed))); n != 1 {
			t.Errorf("%s jobs counted failed: %v, want 1", kind, n)
		}
	}
	for _, id := range []string{archived.ID, gone.ID} {
		r, _ := b.client.Get(t.Context(), id)
		if r.State != jobs.StateFailed || r.Reason == "" {
			t.Fatalf("record %+v", r)
		}
		if got := types(b.events(t, id)); got != "job.enqueued job.failed " {
			t.Fatalf("events of %s: %s", id, got)
		}
		if h := b.history(t, id); len(h) != 1 || h[0].Status != jobs.StatusFailed {
			t.Fatalf("history %+v", h)
		}
	}
	if r, _ := b.client.Get(t.Context(), waiting.ID); r.State != jobs.StatePending {
		t.Fatalf("a waiting job was touched: %+v", r)
	}
	// The settled jobs' locks are gone: the same requests make new jobs.
	again := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	if again.ID == archived.ID {
		t.Fatal("lock of a settled job still held")
	}
	// Each settled failure is notified like any final failure: a notify
	// job per sink, carrying job.failed for that job.
	notified := map[string]bool{}
	testsignal.WaitFor(t, "two notify jobs", func() bool {
		tasks, _ := insp.ListPendingTasks(jobs.NotifyQueue)
		for _, task := range tasks {
			p, err := jobs.Decode(task.Payload)
			if err != nil {
				t.Fatal(err)
			}
			n, err := jobs.DecodeNotification(p.Notification)
			if err != nil || n.Type != jobs.EventJobFailed {
				t.Fatalf("notification %+v, %v", n, err)
			}
			notified[n.JobID] = true
		}
		return len(notified) >= 2
	})
	if !notified[archived.ID] || !notified[gone.ID] || len(notified) != 2 {
		t.Fatalf("notified %v; want the two settled jobs", notified)
	}
	// Now that asynq holds every notify job, a second pass finds nothing.
	if n, _ := b.w.reconcile(t.Context(), 0); n != 0 {
		t.Fatalf("second reconcile settled %d", n)
	}
}

// The record a start returns is built from the fields it reads back and
// what the attempt knows (startReads); it must be the record Redis holds
// once the start applied, on a first attempt and on a retry (with an
// attempt error), for a batch's job with parameters.
func TestStartedRecordIsTheRecord(t *testing.T) {
	var calls atomic.Int32
	type pair struct{ started, stored jobs.Record }
	pairs := make(chan pair, 2)
	built := make(chan jobs.Record, 2)
	var b *bundle
	b = setup(t, func(w *Worker) {
		w.started = func(r jobs.Record) { built <- r }
		w.handlers[jobs.KindCompact] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			stored, err := b.client.Get(ctx, p.JobID)
			if err != nil {
				return outcome{}, err
			}
			pairs <- pair{<-built, stored}
			if calls.Add(1) == 1 {
				return outcome{}, errors.New("transient trouble")
			}
			return outcome{Status: jobs.StatusSkipped}, nil
		}
	}, "orders")
	batch, err := b.client.EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindCompact, Params: jobs.Params{Force: true, DryRun: true},
		Trigger: jobs.TriggerManual, Actor: "tester"})
	if err != nil || len(batch.Jobs) != 1 {
		t.Fatalf("batch %+v, %v", batch, err)
	}
	b.waitState(t, batch.Jobs[0].Record.ID, jobs.StateSucceeded)
	for attempt := 1; attempt <= 2; attempt++ {
		p := <-pairs
		started, _ := json.Marshal(p.started)
		stored, _ := json.Marshal(p.stored)
		if string(started) != string(stored) || p.started.Run != p.stored.Run || p.started.EnqueuedMS != p.stored.EnqueuedMS {
			t.Fatalf("attempt %d: the start returned\n%s (run %s, enq_ms %d)\nRedis holds\n%s (run %s, enq_ms %d)", attempt,
				started, p.started.Run, p.started.EnqueuedMS, stored, p.stored.Run, p.stored.EnqueuedMS)
		}
		if attempt == 2 && (len(p.started.Errors) != 1 || p.started.BatchID == "" || !p.started.Params.Force) {
			t.Fatalf("the retry's record lacks what it should carry: %+v", p.started)
		}
	}
}
