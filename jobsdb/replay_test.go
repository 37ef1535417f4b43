package jobsdb

import (
	"context"
	"maps"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// replayScripts sends each script whose arguments contain match Times
// times in all (at least twice), as go-redis does when a read timed out
// and Redis, only stalled, later runs the first send and every retry.
// Between runs it calls Between (a reconciler settling the job, a
// cancel, …), so the interleaving a stall allows happens on demand. The
// caller reads the answer of the last run, as go-redis does.
type replayScripts struct {
	Match   string
	Times   int
	Between func(run int)
	runs    atomic.Int64 // runs of matching scripts
}

func (r *replayScripts) matches(cmd redis.Cmder) bool {
	if !isScript(cmd) {
		return false
	}
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.Contains(s, r.Match) {
			return true
		}
	}
	return false
}

func (*replayScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *replayScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !r.matches(cmd) {
			return next(ctx, cmd)
		}
		var err error
		for i := range max(r.Times, 2) {
			if i > 0 && r.Between != nil {
				r.Between(i)
			}
			err = next(ctx, cmd)
			r.runs.Add(1)
		}
		return err
	}
}

func (r *replayScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// replayClient is a client whose scripts matching r replay.
func replayClient(t *testing.T, srv *redistest.Server, r *replayScripts) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	c.AddHook(r)
	return c
}

func eventsOf(t *testing.T, rdb redis.Cmdable, id string) string {
	t.Helper()
	evs, err := ReadEvents(t.Context(), rdb, "0", 10000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.JobID == id {
			out = append(out, string(e.Type))
		}
	}
	return strings.Join(out, " ")
}

func historyOf(t *testing.T, rdb redis.Cmdable, id string) int {
	t.Helper()
	hs, _, err := History(t.Context(), rdb, jobs.HistoryQuery{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range hs {
		if h.JobID == id {
			n++
		}
	}
	return n
}

// oneFinish asserts a job's events and its one history entry.
func oneFinish(t *testing.T, rdb redis.Cmdable, id, events string) {
	t.Helper()
	if ev := eventsOf(t, rdb, id); ev != events {
		t.Fatalf("events: %s; want %s", ev, events)
	}
	if n := historyOf(t, rdb, id); n != 1 {
		t.Fatalf("%d history entries, want 1", n)
	}
}

// pendingJob starts a Redis where node n1 owns store orders, and enqueues
// one job of kind there.
func pendingJob(t *testing.T, kind jobs.Kind) (*redistest.Server, *redis.Client, jobs.Record) {
	t.Helper()
	srv := redistest.Start(t)
	plain := srv.Client(t)
	ownedBy(t, plain, "n1", "orders")
	enq, err := NewClient(plain, jobs.ClientConfig{}).Enqueue(t.Context(), jobs.Request{Kind: kind, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	return srv, plain, enq.Record
}

// Every step of a job's life, sent three times: each happens once, and
// the caller is told it happened (Replayed), not that it was refused.
func TestChangesAreSafeToReplay(t *testing.T) {
	srv := redistest.Start(t)
	plain := srv.Client(t)
	ownedBy(t, plain, "n1", "orders")
	c := NewClient(plain, jobs.ClientConfig{})
	enq, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	rec := enq.Record
	plain.Set(t.Context(), keyspace.LeaseKey("orders"), "lease-1", 0)
	lease := &keyspace.LeaseCheck{Key: keyspace.LeaseKey("orders"), Value: "lease-1"}

	for _, step := range []struct {
		name  string
		guard keyspace.Guard
		ch    keyspace.Change
	}{
		{"start", keyspace.StartGuard("run1", 1), keyspace.Change{Op: "start:run1", Lease: lease, HSet: map[string]any{"state": "active", "attempts": 1, "run": "run1"},
			XAdd: []keyspace.StreamEntry{keyspace.NewEntry(keyspace.EventsStream, 1000, jobs.Event{Type: jobs.EventJobStarted, JobID: rec.ID})}}},
		{"retry", keyspace.RunGuard("run1"), keyspace.Change{Op: "end:run1", Lease: lease, HSet: map[string]any{"state": "retry"},
			XAdd: []keyspace.StreamEntry{keyspace.NewEntry(keyspace.EventsStream, 1000, jobs.Event{Type: jobs.EventJobRetrying, JobID: rec.ID})}}},
		{"start again", keyspace.StartGuard("run2", 2), keyspace.Change{Op: "start:run2", Lease: lease, HSet: map[string]any{"state": "active", "attempts": 2, "run": "run2"},
			XAdd: []keyspace.StreamEntry{keyspace.NewEntry(keyspace.EventsStream, 1000, jobs.Event{Type: jobs.EventJobStarted, JobID: rec.ID})}}},
	} {
		r := &replayScripts{Match: step.ch.Op, Times: 3}
		res, err := Apply(t.Context(), replayClient(t, srv, r), rec.ID, step.guard, step.ch)
		if err != nil || !res.OK || !res.Replayed {
			t.Fatalf("%s sent %d times: %+v, %v; want OK and Replayed", step.name, r.runs.Load(), res, err)
		}
	}
	// Progress: each report once, a late copy of an older one never.
	for seq := int64(1); seq <= 2; seq++ {
		r := &replayScripts{Match: "run2", Times: 3}
		ok, err := Progress(t.Context(), replayClient(t, srv, r), rec.ID, "run2", seq, 1000, jobs.Event{Type: jobs.EventJobProgress, JobID: rec.ID})
		if err != nil || !ok {
			t.Fatalf("progress %d: %v, %v", seq, ok, err)
		}
	}
	if ok, _ := Progress(t.Context(), plain, rec.ID, "run2", 1, 1000, jobs.Event{Type: jobs.EventJobProgress, JobID: rec.ID}); !ok {
		t.Fatal("a late copy of progress 1 reported as not in the stream")
	}
	// The end, sent three times; a reconciler settling what it saw before
	// the end is refused between the copies.
	stale := rec
	stale.State, stale.Run, stale.Attempts = jobs.StateActive, "run2", 2
	end := keyspace.Change{Op: "end:run2", Lease: lease}
	end.End(stale, jobs.Terminal{State: jobs.StateSucceeded, At: time.Now(), History: jobs.HistoryEntry{Status: jobs.StatusCompacted}}, c.cfg)
	var settled Applied
	r := &replayScripts{Match: end.Op, Times: 3, Between: func(int) {
		settle := keyspace.Change{Op: keyspace.NewOp("settle")}
		settle.End(stale, jobs.Terminal{State: jobs.StateFailed, Error: "asynq archived the task", At: time.Now()}, c.cfg)
		settled, _ = Apply(t.Context(), plain, rec.ID, keyspace.ObservedGuard(stale), settle)
	}}
	res, err := Apply(t.Context(), replayClient(t, srv, r), rec.ID, keyspace.RunGuard("run2"), end)
	if err != nil || !res.OK || !res.Replayed || settled.OK {
		t.Fatalf("end sent 3 times with a settle between: %+v, %v; settle %+v", res, err, settled)
	}
	// Late copies of old steps change nothing now.
	for _, late := range []struct {
		guard keyspace.Guard
		ch    keyspace.Change
	}{
		{keyspace.StartGuard("run1", 1), keyspace.Change{Op: "start:run1b", HSet: map[string]any{"state": "active"}}},
		{keyspace.StartGuard("run3", 3), keyspace.Change{Op: "start:run3", HSet: map[string]any{"state": "active"}}},
		{keyspace.RunGuard("run1"), keyspace.Change{Op: "end:run1b", HSet: map[string]any{"state": "failed"}}},
		{keyspace.LiveGuard(), keyspace.Change{Op: "cancel:x", HSet: map[string]any{"state": "canceled"}}},
	} {
		if res, err := Apply(t.Context(), plain, rec.ID, late.guard, late.ch); err != nil || res.OK {
			t.Fatalf("late %s applied to a finished job: %+v, %v", late.ch.Op, res, err)
		}
	}
	got, err := c.Get(t.Context(), rec.ID)
	if err != nil || got.State != jobs.StateSucceeded {
		t.Fatalf("record %+v, %v; want succeeded", got, err)
	}
	oneFinish(t, plain, rec.ID, "job.enqueued job.started job.retrying job.started job.progress job.progress job.succeeded")
}

// A cancel whose first send applied and whose answer was lost is the
// cancel that ended the job, not "already finished".
func TestCancelIsSafeToReplay(t *testing.T) {
	srv, plain, rec := pendingJob(t, jobs.KindBackup)
	r := &replayScripts{Match: "cancel:", Times: 4}
	c := NewClient(replayClient(t, srv, r), jobs.ClientConfig{})
	got, err := c.Cancel(t.Context(), rec.ID, "bob")
	if err != nil || got.State != jobs.StateCanceled || r.runs.Load() < 2 {
		t.Fatalf("cancel sent %d times: %+v, %v", r.runs.Load(), got, err)
	}
	oneFinish(t, plain, rec.ID, "job.enqueued job.canceled")
}

// The stall at enqueue: the first run of the enqueue script writes the
// record and its task, the job is settled as failed before the retry runs
// (as a reconciler would settle it had a failover lost the task), and the
// retry must not make the job pending again, nor queue a second task: a
// terminal state is final.
func TestEnqueueReplayAfterSettleKeepsTerminalState(t *testing.T) {
	srv := redistest.Start(t)
	plain := srv.Client(t)
	ownedBy(t, plain, "n1", "orders")
	r := &replayScripts{Match: "job.enqueued", Times: 3}
	r.Between = func(run int) {
		if run != 1 {
			return
		}
		ids, _ := plain.SMembers(context.Background(), keyspace.InFlightKey("node.n1")).Result()
		for _, id := range ids {
			rec, err := NewClient(plain, jobs.ClientConfig{}).Get(context.Background(), id)
			if err != nil {
				t.Error(err)
				return
			}
			ch := keyspace.Change{Op: keyspace.NewOp("settle")}
			ch.End(rec, jobs.Terminal{State: jobs.StateFailed, Reason: "task is gone from asynq", Error: "task is gone from asynq", At: time.Now()}, jobs.ClientConfig{})
			if res, err := Apply(context.Background(), plain, id, keyspace.ObservedGuard(rec), ch); err != nil || !res.OK {
				t.Errorf("settle: %+v, %v", res, err)
			}
		}
	}
	c := NewClient(replayClient(t, srv, r), jobs.ClientConfig{})
	got, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Record.State != jobs.StateFailed {
		t.Fatalf("enqueue answered %s, want the settled record (failed)", got.Record.State)
	}
	stored, err := c.Get(t.Context(), got.Record.ID)
	if err != nil || stored.State != jobs.StateFailed {
		t.Fatalf("record %+v, %v; want failed", stored, err)
	}
	// The first run queued the task with the record; the replay queued
	// none. (The attempt that takes it finds the record terminal and does
	// not run: worker's TestTerminalRecordIsNotRun.)
	if n, _ := plain.LLen(t.Context(), "asynq:{node.n1}:pending").Result(); n != 1 {
		t.Fatalf("%d tasks in asynq for one job, want the 1 queued with its record", n)
	}
	oneFinish(t, plain, got.Record.ID, "job.enqueued job.failed")
}

// The incident and store.lost announcements are made once, atomically
// with their event and notification, however often they are sent.
func TestAnnounceIsSafeToReplay(t *testing.T) {
	srv := redistest.Start(t)
	plain := srv.Client(t)
	r := &replayScripts{Match: `"id":"i1"`, Times: 3}
	rdb := replayClient(t, srv, r)
	ev := jobs.Event{Type: jobs.EventStoreCorrupt, Store: "orders"}
	n := jobs.Notification{ID: "n1", Type: jobs.EventStoreCorrupt, Store: "orders", Summary: "x"}
	made, _, err := Announce(t.Context(), rdb, keyspace.IncidentKey("orders"), `{"id":"i1"}`, 1000, ev, &n)
	if err != nil || !made || r.runs.Load() < 2 {
		t.Fatalf("announce sent %d times: %v, %v", r.runs.Load(), made, err)
	}
	made, other, err := Announce(t.Context(), plain, keyspace.IncidentKey("orders"), `{"id":"i2"}`, 1000, ev, &n)
	if err != nil || made || other != `{"id":"i1"}` {
		t.Fatalf("a second incident: made %v, other %q, %v", made, other, err)
	}
	evs, _ := ReadEvents(t.Context(), plain, "0", 100, 0)
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	if l, _ := plain.LLen(t.Context(), keyspace.OutboxKey).Result(); l != 1 {
		t.Fatalf("%d notifications queued, want 1", l)
	}
}

// A claim sent twice keeps one token; renewal tells expired from taken;
// stats are published only under the lease they name.
func TestLeaseFencing(t *testing.T) {
	srv := redistest.Start(t)
	plain := srv.Client(t)
	r := &replayScripts{Match: "inst-a", Times: 3}
	a := jobs.Lease{Node: "n1", Host: "h1", Instance: "inst-a"}
	v1, ok, err := ClaimLease(t.Context(), replayClient(t, srv, r), "orders", a, time.Minute)
	if err != nil || !ok {
		t.Fatalf("claim: %q %v %v", v1, ok, err)
	}
	l1, _ := jobs.DecodeLease(v1)
	if l1.Token != 1 || l1.Node != "n1" {
		t.Fatalf("lease %+v; want token 1 after a claim sent %d times", l1, r.runs.Load())
	}
	if st, _, err := RenewLease(t.Context(), plain, "orders", v1, time.Minute); err != nil || st != jobs.LeaseHeld {
		t.Fatalf("renew: %v %v", st, err)
	}
	// Another node cannot take it while it lives.
	b := jobs.Lease{Node: "n2", Host: "h2", Instance: "inst-b"}
	if held, ok, _ := ClaimLease(t.Context(), plain, "orders", b, time.Minute); ok || held != v1 {
		t.Fatalf("n2 took a live lease: %q", held)
	}
	// It expires; n2 claims it: a new token, and n1 finds it taken.
	plain.Del(t.Context(), keyspace.LeaseKey("orders"))
	v2, ok, err := ClaimLease(t.Context(), plain, "orders", b, time.Minute)
	if l2, _ := jobs.DecodeLease(v2); err != nil || !ok || l2.Token != 2 {
		t.Fatalf("n2 claim: %q %v %v", v2, ok, err)
	}
	if st, other, err := RenewLease(t.Context(), plain, "orders", v1, time.Minute); err != nil || st != jobs.LeaseTaken || other != v2 {
		t.Fatalf("n1 renew after the theft: %v %q %v", st, other, err)
	}
	if ok, err := PublishStats(t.Context(), plain, "orders", v1, `{"from":"n1"}`); err != nil || ok {
		t.Fatalf("stale publish: %v %v", ok, err)
	}
	if ok, err := PublishStats(t.Context(), plain, "orders", v2, `{"from":"n2"}`); err != nil || !ok {
		t.Fatalf("publish: %v %v", ok, err)
	}
	// A fenced change with the stale value is refused.
	ownedBy(t, plain, "n2", "orders")
	enq, err := NewClient(plain, jobs.ClientConfig{}).Enqueue(t.Context(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Apply(t.Context(), plain, enq.Record.ID, keyspace.StartGuard("r", 1),
		keyspace.Change{Op: "start:r", Lease: &keyspace.LeaseCheck{Key: keyspace.LeaseKey("orders"), Value: v1}, HSet: map[string]any{"state": "active"}})
	if err != nil || res.OK || !res.Fenced {
		t.Fatalf("stale start: %+v, %v; want Fenced", res, err)
	}
	if plain.Get(t.Context(), keyspace.StatsKey("orders")).Val() != `{"from":"n2"}` {
		t.Fatal("stale publish overwrote the holder's stats")
	}
}

// An end that acknowledges its asynq task (Change.Ack), sent three
// times, does asynq's done once: the task leaves the active list and
// lease set, its hash is deleted, it is counted processed once, and every
// copy answers Acked, so the worker answers asynq's own done itself. An
// end whose task is no longer active (asynq's recoverer moved it) touches
// nothing of asynq's and does not answer Acked.
func TestEndAcknowledgesItsTaskOnce(t *testing.T) {
	for _, active := range []bool{true, false} {
		t.Run(map[bool]string{true: "active", false: "moved by asynq"}[active], func(t *testing.T) {
			srv, plain, rec := pendingJob(t, jobs.KindCompact)
			ctx := t.Context()
			q := jobs.NodeQueue("n1")
			if active { // as asynq's dequeue leaves it
				plain.LRem(ctx, keyspace.AsynqPendingKey(q), 0, rec.ID)
				plain.LPush(ctx, keyspace.AsynqActiveKey(q), rec.ID)
				plain.ZAdd(ctx, keyspace.AsynqLeaseKey(q), redis.Z{Score: float64(time.Now().Add(30 * time.Second).Unix()), Member: rec.ID})
			}
			if _, err := Apply(ctx, plain, rec.ID, keyspace.StartGuard("run1", 1),
				keyspace.Change{Op: "start:run1", HSet: map[string]any{"state": "active", "attempts": 1, "run": "run1"}}); err != nil {
				t.Fatal(err)
			}
			cur := rec
			cur.State, cur.Run, cur.Attempts = jobs.StateActive, "run1", 1
			end := keyspace.Change{Op: "end:run1", Ack: &keyspace.AsynqAck{Queue: q, TaskID: rec.ID, At: time.Now()}}
			end.End(cur, jobs.Terminal{State: jobs.StateSucceeded, At: time.Now(), History: jobs.HistoryEntry{Status: jobs.StatusCompacted}},
				jobs.ClientConfig{}.WithDefaults())
			r := &replayScripts{Match: end.Op, Times: 3}
			res, err := Apply(ctx, replayClient(t, srv, r), rec.ID, keyspace.RunGuard("run1"), end)
			if err != nil || !res.OK || !res.Replayed || res.Acked != active {
				t.Fatalf("end sent 3 times: %+v, %v; want OK, Replayed and Acked %v", res, err, active)
			}
			total, _ := plain.Get(ctx, keyspace.AsynqProcessedTotalKey(q)).Int()
			day, _ := plain.Get(ctx, keyspace.AsynqProcessedKey(q, time.Now())).Int()
			hash := plain.Exists(ctx, keyspace.AsynqTaskKeyPrefix(q)+rec.ID).Val()
			inActive := plain.LLen(ctx, keyspace.AsynqActiveKey(q)).Val()
			leases := plain.ZCard(ctx, keyspace.AsynqLeaseKey(q)).Val()
			want := [5]int64{1, 1, 0, 0, 0} // processed total and today; hash, active, leases
			if !active {
				want = [5]int64{0, 0, 1, 0, 0}
			}
			if got := [5]int64{int64(total), int64(day), hash, inActive, leases}; got != want {
				t.Fatalf("asynq's keys after the end: processed %d (today %d), task hash %d, active %d, leases %d; want %v",
					total, day, hash, inActive, leases, want)
			}
			oneFinish(t, plain, rec.ID, "job.enqueued job.succeeded")
		})
	}
}

// A change that reads back named fields gets those fields' values in
// order, "" for a field the record lacks, and the same from a replay.
func TestChangeReadsBackNamedFields(t *testing.T) {
	srv, _, rec := pendingJob(t, jobs.KindCompact)
	ch := keyspace.Change{Op: "start:run1", HSet: map[string]any{"state": "active", "attempts": 1, "run": "run1"},
		ReadFields: []string{"queue", "no_such_field", "attempts", "max_retry"}}
	r := &replayScripts{Match: ch.Op, Times: 2}
	res, err := Apply(t.Context(), replayClient(t, srv, r), rec.ID, keyspace.StartGuard("run1", 1), ch)
	if err != nil || !res.OK || !res.Replayed {
		t.Fatalf("start sent twice: %+v, %v", res, err)
	}
	want := map[string]string{"queue": rec.Queue, "no_such_field": "", "attempts": "1", "max_retry": strconv.Itoa(rec.MaxRetry)}
	if !maps.Equal(res.Fields, want) {
		t.Fatalf("fields read back %v, want %v", res.Fields, want)
	}
	if res.Record.ID != "" {
		t.Fatalf("the whole record read back too: %+v", res.Record)
	}
}

// A start takes over an active record (an attempt whose worker vanished)
// only for a later attempt, and then first appends the lost attempt's
// end; a first attempt never finds an earlier one active, which is why
// the worker sends that entry only from the second attempt on.
func TestOnlyALaterAttemptTakesOverAnActiveRecord(t *testing.T) {
	_, plain, rec := pendingJob(t, jobs.KindCompact)
	start := func(run string, n int) (Applied, error) {
		lost := keyspace.NewEntry(keyspace.EventsStream, 1000, jobs.Event{Type: jobs.EventJobRetrying, JobID: rec.ID, Attempt: n - 1})
		ch := keyspace.Change{Op: "start:" + run, HSet: map[string]any{"state": "active", "attempts": n, "run": run},
			IfWasActive: []keyspace.StreamEntry{lost},
			XAdd:        []keyspace.StreamEntry{keyspace.NewEntry(keyspace.EventsStream, 1000, jobs.Event{Type: jobs.EventJobStarted, JobID: rec.ID, Attempt: n})}}
		return Apply(t.Context(), plain, rec.ID, keyspace.StartGuard(run, n), ch)
	}
	if res, err := start("run1", 1); err != nil || !res.OK {
		t.Fatalf("first start: %+v, %v", res, err)
	}
	if res, err := start("run1b", 1); err != nil || res.OK {
		t.Fatalf("another first attempt took over the active record: %+v, %v", res, err)
	}
	if res, err := start("run2", 2); err != nil || !res.OK || res.Prior != jobs.StateActive {
		t.Fatalf("the second attempt did not take over: %+v, %v", res, err)
	}
	if ev := eventsOf(t, plain, rec.ID); ev != "job.enqueued job.started job.retrying job.started" {
		t.Fatalf("events: %s", ev)
	}
}
