package jobsdb

import (
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// batchSetup starts a Redis where n1 owns a and c and n2 owns b, with a
// compact job on a already in flight (held by the batch's equal request).
func batchSetup(t *testing.T) (*redistest.Server, *redis.Client, jobs.Record) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ownedBy(t, rdb, "n1", "a", "c")
	ownedBy(t, rdb, "n2", "b")
	held, err := NewClient(rdb, jobs.ClientConfig{}).Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "a", Trigger: jobs.TriggerManual, Actor: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return srv, rdb, held.Record
}

// checkBatch asserts a batch over a, b, c whose a job was held: the
// answer, the batch key, the records, one job.enqueued per new job and
// their tasks.
func checkBatch(t *testing.T, rdb *redis.Client, b jobs.Batch, held jobs.Record) {
	t.Helper()
	if len(b.Jobs) != 3 || b.ID == "" || b.ID[0] != 'b' {
		t.Fatalf("batch %+v", b)
	}
	if j := b.Jobs[0]; !j.Deduplicated || j.Record.ID != held.ID {
		t.Fatalf("store a: %+v, want the held job %s", j, held.ID)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for i, st := range []string{"b", "c"} {
		j := b.Jobs[i+1]
		r := j.Record
		node := map[string]string{"b": "n2", "c": "n1"}[st]
		if j.Deduplicated || r.Store != st || r.BatchID != b.ID || r.State != jobs.StatePending || r.Node != node || r.Queue != jobs.NodeQueue(node) {
			t.Fatalf("store %s: %+v", st, j)
		}
		if ev := eventsOf(t, rdb, r.ID); ev != "job.enqueued" {
			t.Fatalf("store %s: events %q", st, ev)
		}
		if _, err := insp.GetTaskInfo(r.Queue, r.ID); err != nil {
			t.Fatalf("store %s: no task: %v", st, err)
		}
	}
	listed, err := NewClient(rdb, jobs.ClientConfig{}).BatchJobs(t.Context(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range listed {
		ids = append(ids, r.ID)
	}
	want := []string{b.Jobs[2].Record.ID, b.Jobs[1].Record.ID, held.ID} // newest first
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("batch lists %v, want %v", ids, want)
	}
	if ttl := rdb.PTTL(t.Context(), keyspace.BatchKey(b.ID)).Val(); ttl <= 0 {
		t.Fatalf("batch key TTL %v", ttl)
	}
}

func TestEnqueueBatch(t *testing.T) {
	_, rdb, held := batchSetup(t)
	b, err := NewClient(rdb, jobs.ClientConfig{}).EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindCompact, Trigger: jobs.TriggerManual, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, rdb, b, held)
}

func TestEnqueueBatchNoStores(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	b, err := NewClient(rdb, jobs.ClientConfig{}).EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindBackup, Trigger: jobs.TriggerManual, Actor: "alice"})
	if err != nil || len(b.Jobs) != 0 || b.Jobs == nil {
		t.Fatalf("batch %+v, %v", b, err)
	}
	if n := rdb.Exists(t.Context(), keyspace.BatchKey(b.ID)).Val(); n != 0 {
		t.Fatal("an empty batch was written")
	}
}

func TestEnqueueBatchRefusesRestore(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	if _, err := NewClient(rdb, jobs.ClientConfig{}).EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindRestore}); err == nil {
		t.Fatal("a batch of restores was accepted")
	}
}

// The batch script sent three times (a stalled Redis running every copy)
// is one batch: each job recorded and announced once, handed to asynq
// once, the held job still the held one.
func TestEnqueueBatchIsSafeToReplay(t *testing.T) {
	srv, rdb, held := batchSetup(t)
	r := &replayScripts{Match: `"actor":"replayer"`, Times: 3}
	b, err := NewClient(replayClient(t, srv, r), jobs.ClientConfig{}).EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindCompact, Trigger: jobs.TriggerManual, Actor: "replayer"})
	if err != nil {
		t.Fatal(err)
	}
	if r.runs.Load() < 3 {
		t.Fatalf("the batch script ran %d times", r.runs.Load())
	}
	checkBatch(t, rdb, b, held)
}

// When asynq refuses a task, that job and every later one are abandoned
// (failed, with their events and history), the earlier ones stay queued,
// and the batch still lists them all: nothing is half recorded.
func TestEnqueueBatchHandOverFailure(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ownedBy(t, rdb, "n1", "a", "c")
	ownedBy(t, rdb, "n2", "b")
	// asynq's pending list of n2's queue is not a list: its enqueue fails.
	rdb.Set(t.Context(), "asynq:{node.n2}:pending", "not a list", 0)
	c := NewClient(rdb, jobs.ClientConfig{})
	b, err := c.EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindBackup, Trigger: jobs.TriggerManual, Actor: "alice"})
	if err == nil || !strings.Contains(err.Error(), b.ID) {
		t.Fatalf("err = %v, want one naming batch %s", err, b.ID)
	}
	listed, lerr := c.BatchJobs(t.Context(), b.ID)
	if lerr != nil || len(listed) != 3 {
		t.Fatalf("batch lists %d jobs, %v; want 3", len(listed), lerr)
	}
	state := map[string]jobs.State{}
	for _, r := range listed {
		state[r.Store] = r.State
		if r.State == jobs.StateFailed {
			if r.Reason != "enqueue failed" {
				t.Errorf("store %s: reason %q", r.Store, r.Reason)
			}
			oneFinish(t, rdb, r.ID, "job.enqueued job.failed")
		}
	}
	if state["a"] != jobs.StatePending || state["b"] != jobs.StateFailed || state["c"] != jobs.StateFailed {
		t.Fatalf("states %v; want a pending, b and c failed", state)
	}
}
