package jobsdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// ownedBy records node as the owner of stores, as a worker's heartbeat does.
func ownedBy(t *testing.T, rdb *redis.Client, node string, stores ...string) {
	t.Helper()
	for _, s := range stores {
		if err := rdb.HSet(t.Context(), keyspace.StoresKey, s, node).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEnqueueRoutesRecordsAndAnnounces(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ownedBy(t, rdb, "n1", "orders")
	c := NewClient(rdb, jobs.ClientConfig{})
	got, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Params: jobs.Params{DryRun: true}, Trigger: jobs.TriggerManual, Actor: "alice", BatchID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	r := got.Record
	if got.Deduplicated || r.State != jobs.StatePending || r.Queue != "node.n1" || r.Node != "n1" || r.MaxRetry != 3 || r.BatchID != "b1" || !r.Params.DryRun {
		t.Fatalf("enqueued %+v", got)
	}
	stored, err := c.Get(t.Context(), r.ID)
	if err != nil || stored.ID != r.ID || stored.State != jobs.StatePending || stored.Actor != "alice" || stored.Node != "n1" || stored.Queue != "node.n1" {
		t.Fatalf("Get = %+v, %v", stored, err)
	}
	if in, err := rdb.SIsMember(t.Context(), keyspace.InFlightKey("node.n1"), r.ID).Result(); err != nil || !in {
		t.Fatalf("not in the owner queue's in-flight set: %v, %v", in, err)
	}
	// The task is in the owner's queue under the job id.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	info, err := insp.GetTaskInfo("node.n1", r.ID)
	if err != nil || info.Type != "compact" || info.MaxRetry != 3 {
		t.Fatalf("asynq task: %+v, %v", info, err)
	}
	p, err := jobs.Decode(info.Payload)
	if err != nil || p.JobID != r.ID || p.Actor != "alice" {
		t.Fatalf("task payload %+v, %v", p, err)
	}
	// job.enqueued is in the events stream, before anything else of the job.
	evs, err := ReadEvents(t.Context(), rdb, "0", 10, 0)
	if err != nil || len(evs) != 1 || evs[0].Type != jobs.EventJobEnqueued || evs[0].JobID != r.ID || evs[0].Node != "n1" {
		t.Fatalf("events %+v, %v", evs, err)
	}
	if _, err := c.Get(t.Context(), "jnope"); !errors.Is(err, jobs.ErrUnknownJob) {
		t.Fatalf("Get(unknown) = %v", err)
	}
}

func TestEnqueueRejects(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	c := NewClient(rdb, jobs.ClientConfig{})
	req := jobs.Request{Kind: jobs.KindBackup, Store: "ghost", Trigger: jobs.TriggerManual, Actor: "a"}
	if _, err := c.Enqueue(t.Context(), req); !errors.Is(err, jobs.ErrUnknownStore) {
		t.Fatalf("unowned store: %v", err)
	}
	req.Store = "../x"
	if _, err := c.Enqueue(t.Context(), req); !errors.Is(err, jobs.ErrInvalidStore) {
		t.Fatalf("hostile store: %v", err)
	}
	req.Store, req.Kind = "ghost", jobs.KindNotify
	if _, err := c.Enqueue(t.Context(), req); !errors.Is(err, jobs.ErrBadPayload) {
		t.Fatalf("notify through Enqueue: %v", err)
	}
	if n, _ := rdb.DBSize(t.Context()).Result(); n != 0 {
		t.Fatalf("rejected requests wrote %d keys", n)
	}
}

// 50 concurrent requests for the same compaction give one job.
func TestEnqueueDeduplicates(t *testing.T) {
	for _, ap := range []bool{false, true} {
		t.Run(fmt.Sprintf("autopipeline=%v", ap), func(t *testing.T) { testDeduplicates(t, jobs.ClientConfig{Autopipeline: ap}) })
	}
}

func testDeduplicates(t *testing.T, cfg jobs.ClientConfig) {
	rdb := redistest.Start(t).Client(t)
	ownedBy(t, rdb, "n1", "orders")
	c := NewClient(rdb, cfg)
	var wg sync.WaitGroup
	results := make(chan jobs.Enqueued, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
			if err != nil {
				t.Error(err)
				return
			}
			results <- got
		}()
	}
	wg.Wait()
	close(results)
	ids := map[string]bool{}
	fresh := 0
	for r := range results {
		ids[r.Record.ID] = true
		if !r.Deduplicated {
			fresh++
		}
	}
	if len(ids) != 1 || fresh != 1 {
		t.Fatalf("%d distinct jobs, %d not deduplicated; want 1 and 1", len(ids), fresh)
	}
	// Other parameters are another request.
	other, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Params: jobs.Params{Force: true}, Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil || other.Deduplicated || ids[other.Record.ID] {
		t.Fatalf("forced compaction: %+v, %v", other, err)
	}
	// Once the lock is released (the worker does it on a terminal state),
	// the same request makes a new job.
	var id string
	for k := range ids {
		id = k
	}
	p := jobs.Payload{Kind: jobs.KindCompact, Store: "orders"}
	if err := rdb.Del(t.Context(), keyspace.LockKey(p)).Err(); err != nil {
		t.Fatal(err)
	}
	again, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil || again.Deduplicated || again.Record.ID == id {
		t.Fatalf("after release: %+v, %v", again, err)
	}
}

func TestEnqueueRestoreConflict(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ownedBy(t, rdb, "n1", "orders")
	c := NewClient(rdb, jobs.ClientConfig{})
	req := jobs.Request{Kind: jobs.KindRestore, Store: "orders", Params: jobs.Params{BackupID: "b1"}, Trigger: jobs.TriggerManual, Actor: "a"}
	first, err := c.Enqueue(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if same, err := c.Enqueue(t.Context(), req); err != nil || !same.Deduplicated || same.Record.ID != first.Record.ID {
		t.Fatalf("same restore: %+v, %v", same, err)
	}
	req.Params.BackupID = "b2"
	if _, err := c.Enqueue(t.Context(), req); !errors.Is(err, jobs.ErrRestoreInProgress) {
		t.Fatalf("restore of another backup: %v, want ErrRestoreInProgress", err)
	}
}

// With Redis down, enqueue fails cleanly with ErrUnavailable; after it
// returns (AOF), what was accepted is still there.
func TestEnqueueRedisDown(t *testing.T) {
	for _, ap := range []bool{false, true} {
		t.Run(fmt.Sprintf("autopipeline=%v", ap), func(t *testing.T) { testRedisDown(t, jobs.ClientConfig{Autopipeline: ap}) })
	}
}

func testRedisDown(t *testing.T, cfg jobs.ClientConfig) {
	srv := redistest.Start(t, redistest.RequireReal(), redistest.WithAOF("always"))
	rdb := srv.Client(t)
	ownedBy(t, rdb, "n1", "orders")
	c := NewClient(rdb, cfg)
	accepted, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindVerify, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	_, err = c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("Enqueue with Redis down = %v, want ErrUnavailable", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(t.Context(), accepted.Record.ID)
	if err != nil || got.State != jobs.StatePending {
		t.Fatalf("accepted job after Redis restart: %+v, %v", got, err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("node.n1", accepted.Record.ID); err != nil {
		t.Fatalf("accepted task lost: %v", err)
	}
	if _, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"}); err != nil {
		t.Fatalf("Enqueue after Redis returned: %v", err)
	}
}

// A lock left by a job whose record is gone does not block new requests.
func TestStaleLockIsTaken(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ownedBy(t, rdb, "n1", "orders")
	c := NewClient(rdb, jobs.ClientConfig{})
	req := jobs.Request{Kind: jobs.KindVerify, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"}
	first, err := c.Enqueue(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := c.Enqueue(t.Context(), req)
	if err != nil || !dup.Deduplicated || dup.Record.ID != first.Record.ID || dup.Record.Actor != "a" {
		t.Fatalf("dedupe: %+v, %v", dup, err)
	}
	rdb.Del(t.Context(), keyspace.RecordKey(first.Record.ID))
	again, err := c.Enqueue(t.Context(), req)
	if err != nil || again.Deduplicated || again.Record.ID == first.Record.ID {
		t.Fatalf("after the record vanished: %+v, %v", again, err)
	}
}

// resendScripts runs every script twice, as go-redis does when it retries
// a command or a pipelined batch whose connection broke after Redis had
// executed it.
type resendScripts struct{}

func (resendScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (resendScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd) {
			_ = next(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}

func (resendScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, isScript) {
			_ = next(ctx, cmds)
		}
		return next(ctx, cmds)
	}
}

func isScript(cmd redis.Cmder) bool { return strings.HasPrefix(cmd.Name(), "eval") }

// Enqueue survives its scripts (storekeeper's and asynq's) being sent
// twice, alone or in an autopipelined batch: one job, one record, one
// event, one task, handed to asynq and not abandoned; the same holds for
// a notify job.
func TestEnqueueIsSafeToResend(t *testing.T) {
	for _, ap := range []bool{false, true} {
		t.Run(fmt.Sprintf("autopipeline=%v", ap), func(t *testing.T) { testResend(t, jobs.ClientConfig{Autopipeline: ap}) })
	}
}

func testResend(t *testing.T, cfg jobs.ClientConfig) {
	rdb := redistest.Start(t).Client(t)
	ownedBy(t, rdb, "n1", "orders")
	rdb.AddHook(resendScripts{})
	c := NewClient(rdb, cfg)
	req := jobs.Request{Kind: jobs.KindRestore, Store: "orders", Params: jobs.Params{BackupID: "b1"}, Trigger: jobs.TriggerManual, Actor: "a"}
	got, err := c.Enqueue(t.Context(), req)
	if err != nil || got.Deduplicated || got.Record.Node != "n1" {
		t.Fatalf("Enqueue with every script sent twice: %+v, %v", got, err)
	}
	stored, err := c.Get(t.Context(), got.Record.ID)
	if err != nil || stored.State != jobs.StatePending {
		t.Fatalf("record %+v, %v; want pending", stored, err)
	}
	if _, err := c.insp.GetTaskInfo("node.n1", got.Record.ID); err != nil {
		t.Fatalf("task not in asynq: %v", err)
	}
	if n, _ := rdb.LLen(t.Context(), "asynq:{node.n1}:pending").Result(); n != 1 {
		t.Fatalf("%d tasks pending in asynq, want 1", n)
	}
	evs, err := ReadEvents(t.Context(), rdb, "0", 10, 0)
	if err != nil || len(evs) != 1 || evs[0].Type != jobs.EventJobEnqueued {
		t.Fatalf("events %+v, %v; want one job.enqueued", evs, err)
	}
	dup, err := c.Enqueue(t.Context(), req)
	if err != nil || !dup.Deduplicated || dup.Record.ID != got.Record.ID {
		t.Fatalf("the same request again: %+v, %v", dup, err)
	}

	n := jobs.Notification{ID: "n-1", Type: jobs.EventJobFailed, Store: "orders", Summary: "x"}
	rec, made, err := c.EnqueueNotify(t.Context(), n, "hook")
	if err != nil || !made {
		t.Fatalf("EnqueueNotify with every script sent twice: made %v, %v", made, err)
	}
	if stored, err := c.Get(t.Context(), rec.ID); err != nil || stored.State != jobs.StatePending {
		t.Fatalf("notify record %+v, %v; want pending", stored, err)
	}
	if _, made, err := c.EnqueueNotify(t.Context(), n, "hook"); err != nil || made {
		t.Fatalf("the same notification again: made %v, %v", made, err)
	}
}
