package worker

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// A store's lease stolen under a running node (deleted and claimed by
// another node): within a heartbeat the node stops serving the store. Its
// running job is stopped and requeued as lease_lost, no job starts on it,
// handle writes fail with ErrNotOwner, its stats are no longer published
// over the new holder's, store.lost is announced and notified once, and
// the node serves the store again once the lease is free.
func TestLeaseStolen(t *testing.T) {
	g := newGate()
	f := setupFaults(t, options{client: stalledClient(3 * time.Second), worker: func(c *Config) { c.LeaseTTL = 3 * time.Second }},
		func(w *Worker) { w.handlers[jobs.KindBackup] = g.handler(backupJob) }, "orders", "other")
	s, _ := f.reg.Store("orders")
	if err := s.Set([]byte("k"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	running := f.enqueue(t, jobs.KindBackup, "orders", jobs.Params{})
	g.waitStarted(t)

	// Another node takes the lease.
	f.rdb.Del(t.Context(), keyspace.LeaseKey("orders"))
	thief := jobs.Lease{Node: "n2", Host: "elsewhere", Instance: "i2"}
	held, ok, err := jobsdb.ClaimLease(t.Context(), f.rdb, "orders", thief, time.Hour)
	if err != nil || !ok {
		t.Fatalf("thief claim: %v %v", ok, err)
	}
	if ok, err := jobsdb.PublishStats(t.Context(), f.rdb, "orders", held, `{"node":"n2"}`); err != nil || !ok {
		t.Fatal(ok, err)
	}

	// store.lost within a heartbeat (LeaseTTL/3), waited for as an event.
	var lost []jobs.Event
	testsignal.WaitForWithin(t, 2*f.w.cfg.LeaseTTL/3, "store.lost within a heartbeat", func() bool {
		lost = f.eventsOfType(t, jobs.EventStoreLost)
		return len(lost) > 0
	})
	if lost[0].Store != "orders" || lost[0].Node != "n1" || lost[0].Holder != "n2" {
		t.Fatalf("store.lost %+v", lost[0])
	}
	// The running job was stopped: retry, lease_lost.
	f.waitRecord(t, running.ID, func(r jobs.Record) bool { return r.State == jobs.StateRetry && r.Reason == "lease_lost" })
	// Writes are refused, reads still served.
	if err := s.Set([]byte("k"), []byte("v2")); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("write after the loss: %v, want ErrNotOwner", err)
	}
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "v1" {
		t.Fatalf("read after the loss: %q, %v", v, err)
	}
	if got := f.w.Lost(); got["orders"] != "n2" || len(got) != 1 {
		t.Fatalf("Lost() = %v", got)
	}
	// The heartbeat that found the loss says so once it beats, right
	// after renewing the leases.
	var info jobs.NodeInfo
	if !testsignal.Poll(testsignal.Timeout, func() bool {
		info = f.nodeInfo(t)
		return info.Lost["orders"] == "n2"
	}) {
		t.Fatalf("heartbeat says lost %v", info.Lost)
	}
	// A stale stats publish and a stale finish are refused by Redis.
	stale, _ := jobs.DecodeLease(held)
	stale.Node, stale.Host, stale.Instance, stale.Token = "n1", f.w.lease.Host, f.w.lease.Instance, stale.Token-1
	if ok, err := jobsdb.PublishStats(t.Context(), f.rdb, "orders", stale.Encode(), `{"node":"n1"}`); err != nil || ok {
		t.Fatalf("stale publish: %v %v", ok, err)
	}
	// Another heartbeat passes (node key rewritten): the stats are still
	// the holder's.
	f.waitHeartbeat(t)
	if got := f.rdb.Get(t.Context(), keyspace.StatsKey("orders")).Val(); got != `{"node":"n2"}` {
		t.Fatalf("stats overwritten by the node that lost the store: %s", got)
	}
	// The other store is still served; no job starts on the lost one.
	other := f.enqueue(t, jobs.KindVerify, "other", jobs.Params{})
	f.waitState(t, other.ID, jobs.StateSucceeded)
	select {
	case n := <-g.started:
		t.Fatalf("attempt %d of a job on a lost store started", n)
	default:
	}

	// The thief lets go: the node takes the store back and serves it.
	f.rdb.Del(t.Context(), keyspace.LeaseKey("orders"))
	f.waitRecord(t, running.ID, func(r jobs.Record) bool { return r.State == jobs.StateActive })
	g.waitStarted(t)
	g.finish <- nil
	f.waitState(t, running.ID, jobs.StateSucceeded)
	if err := s.Set([]byte("k"), []byte("v3")); err != nil {
		t.Fatalf("write after the store came back: %v", err)
	}
	if len(f.w.Lost()) != 0 {
		t.Fatalf("still lost: %v", f.w.Lost())
	}
	var notes int
	for _, n := range f.settled(t) {
		if n.Type == jobs.EventStoreLost {
			notes++
		}
	}
	if notes != 1 {
		t.Fatalf("%d store.lost notifications, want 1", notes)
	}
	if n := len(f.eventsOfType(t, jobs.EventStoreLost)); n != 1 {
		t.Fatalf("%d store.lost events, want 1", n)
	}
	if err := validSequence(f.events(t, running.ID)); err != nil {
		t.Fatal(err)
	}

	// Each start and each end the owner recorded carries the fencing
	// token of the claim it was accepted under: the first attempt the
	// node's first claim's, the second its claim after the thief's. Along
	// the stream a store's tokens never go down, and the stats published
	// now carry the current claim's token.
	thiefToken := stale.Token + 1
	var fences []int64
	for _, e := range f.events(t, running.ID) {
		switch e.Type {
		case jobs.EventJobStarted, jobs.EventJobSucceeded:
			if e.Fence == 0 {
				t.Fatalf("%s without a fencing token: %+v", e.Type, e)
			}
			if len(fences) > 0 && e.Fence < fences[len(fences)-1] {
				t.Fatalf("fencing tokens go down along the stream: %v then %d", fences, e.Fence)
			}
			fences = append(fences, e.Fence)
		}
	}
	if len(fences) != 3 || fences[0] >= thiefToken || fences[1] <= thiefToken || fences[2] != fences[1] {
		t.Fatalf("fences of started, started, succeeded: %v; want below the thief's %d, then above it twice", fences, thiefToken)
	}
	var st jobs.StoreStatus
	if err := json.Unmarshal([]byte(f.rdb.Get(t.Context(), keyspace.StatsKey("orders")).Val()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Fence != fences[2] {
		t.Fatalf("published stats carry fence %d, want the current claim's %d", st.Fence, fences[2])
	}
}

// waitRecord waits until the job's record satisfies ok.
func (b *bundle) waitRecord(t *testing.T, id string, ok func(jobs.Record) bool) jobs.Record {
	t.Helper()
	var (
		r   jobs.Record
		err error
	)
	testsignal.WaitFor(t, "job "+id, func() bool {
		r, err = b.client.Get(t.Context(), id)
		return err == nil && ok(r)
	})
	return r
}

func (b *bundle) nodeInfo(t *testing.T) jobs.NodeInfo {
	t.Helper()
	nodes, err := jobsdb.Nodes(t.Context(), b.rdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Node == "n1" && n.Info != nil {
			return *n.Info
		}
	}
	t.Fatal("no heartbeat of n1")
	return jobs.NodeInfo{}
}

// waitHeartbeat waits for the node's next heartbeat (its key rewritten).
func (b *bundle) waitHeartbeat(t *testing.T) {
	t.Helper()
	before := b.nodeInfo(t).At
	testsignal.WaitFor(t, "the next heartbeat", func() bool { return b.nodeInfo(t).At.After(before) })
}

// Stop gives up when its context ends, even if a handler never returns:
// it names the job it abandoned, and asynq gets the task back.
func TestStopHasADeadline(t *testing.T) {
	stuck := make(chan struct{})
	started := make(chan struct{}, 1)
	b := setup(t, func(w *Worker) {
		w.handlers[jobs.KindCompact] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			started <- struct{}{}
			<-stuck // a compaction Pebble cannot stop
			return outcome{}, ctx.Err()
		}
	}, "orders")
	t.Cleanup(func() { close(stuck) }) // before the worker's own cleanup, which waits for the handler
	rec := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{})
	<-started
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.w.Stop(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !containsAll(err.Error(), rec.ID, "orders") {
			t.Fatalf("Stop = %v; want a deadline error naming the job and its store", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not return after its deadline: it waits for the stuck job")
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// quietLeases starts a worker holding "orders" whose heartbeat has run
// its first renewal and will not run again during the test (the TTL is an
// hour): a test that calls renewStore itself must not race the heartbeat's
// own renewal, which would claim, lose or regain the store under it.
func quietLeases(t *testing.T) *faults {
	t.Helper()
	f := setupFaults(t, options{worker: func(c *Config) { c.LeaseTTL = time.Hour }},
		func(w *Worker) { w.signals.heartbeat.Init(t) }, "orders")
	f.w.signals.heartbeat.Wait()
	return f
}

// A renewal that finds the lease expired claims it again (a new token)
// while a fenced write refused meanwhile checks the lease (checkLease):
// that check must not take the node's own new claim for another's. make chaos
// found a store given up for good under a lease its node held (its jobs
// "not started on a store this node lost", its writes refused).
func TestOwnReclaimIsNotALoss(t *testing.T) {
	f := quietLeases(t)
	ctx := t.Context()
	s, _ := f.reg.Store("orders")
	_, held := f.w.own.lease("orders")
	if !held {
		t.Fatal("orders not held at start")
	}
	// The lease ran out while Redis was away; the renewal claims it again.
	f.rdb.Del(ctx, keyspace.LeaseKey("orders"))
	v2, ok, err := jobsdb.ClaimLease(ctx, f.rdb, "orders", f.w.lease, time.Hour)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	f.w.own.mu.Lock()
	f.w.own.held["orders"] = keyspace.LeaseFence("orders", v2)
	f.w.own.mu.Unlock()
	// The check of a refused write finds v2 where it expected the old value.
	f.w.lose(ctx, "orders", v2)
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatalf("a write after the node's own reclaim: %v", err)
	}
	if len(f.w.Lost()) != 0 {
		t.Fatalf("Lost() = %v after the node's own reclaim", f.w.Lost())
	}

	cur, _ := f.rdb.Get(ctx, keyspace.LeaseKey("orders")).Result()
	if l, _ := jobs.DecodeLease(cur); l.Instance != f.w.lease.Instance {
		t.Fatalf("lease %s, want this process's", cur)
	}
}

// The other order: the renewal claims the expired lease again, and before
// its new value takes effect a refused write's lease check finds that
// value in Redis, takes it for another's claim and gives the store up.
// The renewal must then serve the store again under its claim, or the
// store stays given up under a lease its own node holds.
func TestReclaimAfterAGiveUpServesAgain(t *testing.T) {
	f := quietLeases(t)
	ctx := t.Context()
	s, _ := f.reg.Store("orders")
	var claimed string
	f.w.afterReclaim = func(name, v string) {
		claimed = v
		f.w.lose(ctx, name, v) // what checkLease does when a fenced write was refused
		if err := s.Set([]byte("k"), []byte("v")); !errors.Is(err, store.ErrNotOwner) {
			t.Errorf("a write while given up: %v, want ErrNotOwner", err)
		}
	}
	f.rdb.Del(ctx, keyspace.LeaseKey("orders")) // the lease ran out while Redis was away
	f.w.renewStore(ctx, "orders")
	if claimed == "" {
		t.Fatal("the renewal did not claim the expired lease")
	}
	if check, held := f.w.own.lease("orders"); !held || check.Value != claimed {
		t.Fatalf("after the renewal: held %v (%+v), want the new claim %s", held, check, claimed)
	}
	if len(f.w.Lost()) != 0 {
		t.Fatalf("Lost() = %v", f.w.Lost())
	}
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatalf("a write after the renewal: %v", err)
	}
}

// restoreThen runs a backup of "orders" and then a restore of it whose
// handler calls after once the real restore (its swap) is done; it
// returns the bundle, the restore's record as enqueued and the backup.
func restoreThen(t *testing.T, after func(f *faults, w *Worker, p jobs.Payload)) (*faults, jobs.Record, jobs.BackupSummary) {
	t.Helper()
	var f *faults
	f = setupFaults(t, options{}, func(w *Worker) {
		restore := w.handlers[jobs.KindRestore]
		w.handlers[jobs.KindRestore] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			out, err := restore(ctx, s, p)
			after(f, w, p)
			return out, err
		}
	}, "orders")
	backup := f.waitState(t, f.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	var br jobs.BackupResult
	if err := json.Unmarshal(backup.Result, &br); err != nil {
		t.Fatal(err)
	}
	return f, f.enqueue(t, jobs.KindRestore, "orders", jobs.Params{BackupID: br.Backup.ID}), br.Backup
}

// A restore whose swap is done when its store's lease is lost cannot
// record its success (the end is refused by the fence), but the store was
// rolled back all the same: the failed attempt names the rollback
// (store.restored, before job.retrying), so a rollback is never told as
// nothing. Found by make chaos (seed 96451965): a restore's swap finished
// during a Redis failover in which its lease expired, the job then failed
// on the lost lease, and the synced writes it rolled back were named by
// no restore.
func TestRestoreFencedAfterItsSwapNamesTheRollback(t *testing.T) {
	f, restore, backup := restoreThen(t, func(f *faults, _ *Worker, p jobs.Payload) {
		// Another node takes the lease once the swap is done.
		bg := context.Background()
		f.rdb.Del(bg, keyspace.LeaseKey(p.Store))
		if _, ok, err := jobsdb.ClaimLease(bg, f.rdb, p.Store, jobs.Lease{Node: "n2", Host: "elsewhere", Instance: "i2"}, time.Hour); err != nil || !ok {
			t.Errorf("thief claim: %v %v", ok, err)
		}
	})
	f.waitRecord(t, restore.ID, func(r jobs.Record) bool { return r.State == jobs.StateRetry && r.Reason == "lease_lost" })

	evs := f.events(t, restore.ID)
	var types []jobs.EventType
	restored := -1
	for i, e := range evs {
		types = append(types, e.Type)
		if e.Type == jobs.EventStoreRestored {
			restored = i
			if e.BackupID != backup.ID || !e.BackupAt.Equal(backup.CreatedAt) || e.Node != "n1" {
				t.Errorf("store.restored %+v; want backup %s of %s, node n1", e, backup.ID, backup.CreatedAt)
			}
		}
	}
	if restored < 0 || restored+1 >= len(evs) || evs[restored+1].Type != jobs.EventJobRetrying {
		t.Fatalf("events of the restore: %v; want store.restored right before job.retrying", types)
	}
}

// A restore whose job is settled while it runs (the reconciler ends a job
// whose asynq task was given up) cannot record its end either: the record
// is terminal, and a terminal state is final. The rollback its swap made
// is still named: store.restored is appended after the job's end, whose
// state stays as the settle left it.
func TestRestoreEndedWhileItRanNamesTheRollback(t *testing.T) {
	f, restore, backup := restoreThen(t, func(f *faults, w *Worker, p jobs.Payload) {
		// Settled failed meanwhile, as the reconciler does.
		bg := context.Background()
		rec, err := w.jobs.Get(bg, p.JobID)
		if err != nil {
			t.Error(err)
			return
		}
		ch := keyspace.Change{Op: keyspace.NewOp("settle")}
		ch.End(rec, jobs.Terminal{State: jobs.StateFailed, Reason: "settled", Error: "settled", At: time.Now().UTC(),
			Event: jobs.Event{Node: "n1", Attempt: rec.Attempts}, History: jobs.HistoryEntry{Node: "n1"}}, w.cfg.Jobs)
		if res, err := jobsdb.Apply(bg, f.rdb, p.JobID, keyspace.ObservedGuard(rec), ch); err != nil || !res.OK {
			t.Errorf("settle: %+v %v", res, err)
		}
	})
	var evs []jobs.Event
	testsignal.WaitFor(t, "store.restored after the job's end", func() bool {
		evs = f.events(t, restore.ID)
		return len(evs) > 0 && evs[len(evs)-1].Type == jobs.EventStoreRestored
	})
	// A restore that runs past progress's first window (a slow machine)
	// also reports job.progress: not what this test is about.
	evs = slices.DeleteFunc(evs, func(e jobs.Event) bool { return e.Type == jobs.EventJobProgress })
	var types []jobs.EventType
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []jobs.EventType{jobs.EventJobEnqueued, jobs.EventJobStarted, jobs.EventJobFailed, jobs.EventStoreRestored}) {
		t.Fatalf("events of the restore: %v", types)
	}
	if e := evs[3]; e.BackupID != backup.ID || !e.BackupAt.Equal(backup.CreatedAt) {
		t.Fatalf("store.restored %+v; want backup %s of %s", e, backup.ID, backup.CreatedAt)
	}
	if r := f.waitState(t, restore.ID, jobs.StateFailed); r.Reason != "settled" {
		t.Fatalf("the record after the report: %+v", r)
	}
	if h := f.history(t, restore.ID); len(h) != 1 {
		t.Fatalf("%d history entries, want 1", len(h))
	}
}
