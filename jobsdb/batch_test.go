package jobsdb

import (
	"context"
	"fmt"
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
	listed, err := jobsOf(t.Context(), NewClient(rdb, jobs.ClientConfig{}), b.ID)
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

// smallChunks makes EnqueueBatch send n stores per script for the test.
func smallChunks(t *testing.T, n int) {
	old := batchChunk
	batchChunk = n
	t.Cleanup(func() { batchChunk = old })
}

// Each chunk's script sent three times (a stalled Redis running every
// copy) is one batch: each job recorded and announced once, handed to
// asynq once, the held job still the held one.
func TestEnqueueBatchIsSafeToReplay(t *testing.T) {
	for _, chunk := range []int{1, 2, 500} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			smallChunks(t, chunk)
			srv, rdb, held := batchSetup(t)
			r := &replayScripts{Match: `"actor":"replayer"`, Times: 3}
			b, err := NewClient(replayClient(t, srv, r), jobs.ClientConfig{}).EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindCompact, Trigger: jobs.TriggerManual, Actor: "replayer"})
			if err != nil {
				t.Fatal(err)
			}
			if chunks := (3 + chunk - 1) / chunk; r.runs.Load() < int64(3*chunks) {
				t.Fatalf("the batch scripts ran %d times for %d chunks", r.runs.Load(), chunks)
			}
			checkBatch(t, rdb, b, held)
		})
	}
}

// When a job's task cannot be queued (asynq's pending list is not a
// list), nothing of that job is written, the jobs queued before stay
// queued and listed, and the stores after it are not asked for, which the
// error says. The same holds when the chunk's script is run again.
func TestEnqueueBatchQueueFailure(t *testing.T) {
	for _, tc := range []struct {
		chunk  int
		replay bool
	}{{1, false}, {3, false}, {3, true}} {
		t.Run(fmt.Sprintf("chunk=%d,replay=%v", tc.chunk, tc.replay), func(t *testing.T) {
			smallChunks(t, tc.chunk)
			srv := redistest.Start(t)
			rdb := srv.Client(t)
			ownedBy(t, rdb, "n1", "a", "c")
			ownedBy(t, rdb, "n2", "b")
			// asynq's pending list of n2's queue is not a list: its enqueue fails.
			rdb.Set(t.Context(), "asynq:{node.n2}:pending", "not a list", 0)
			client := rdb
			r := &replayScripts{Match: `"actor":"alice"`, Times: 3}
			if tc.replay {
				client = replayClient(t, srv, r)
			}
			b, err := NewClient(client, jobs.ClientConfig{}).EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindBackup, Trigger: jobs.TriggerManual, Actor: "alice"})
			if err == nil || !strings.Contains(err.Error(), b.ID) || !strings.Contains(err.Error(), "store b: its job could not be queued: WRONGTYPE") ||
				!strings.Contains(err.Error(), "the 1 stores after it were not asked for") {
				t.Fatalf("err = %v, want one naming batch %s, store b and why, and the store left", err, b.ID)
			}
			if tc.replay && r.runs.Load() < 3 {
				t.Fatalf("the chunk's script ran %d times", r.runs.Load())
			}
			listed, lerr := jobsOf(t.Context(), NewClient(rdb, jobs.ClientConfig{}), b.ID)
			if lerr != nil || len(listed) != 1 || b.Total != 1 || listed[0].Store != "a" || listed[0].State != jobs.StatePending {
				t.Fatalf("batch lists %+v (answer: %d), %v; want a's job, pending", listed, b.Total, lerr)
			}
			if n := rdb.LLen(t.Context(), "asynq:{node.n1}:pending").Val(); n != 1 {
				t.Fatalf("%d tasks in n1's queue, want a's", n)
			}
			// Nothing of b's job (no record, lock or event), and nothing of c's.
			if keys := rdb.Keys(t.Context(), keyspace.RecordKey("*")).Val(); len(keys) != 1 {
				t.Fatalf("job records %v, want a's only", keys)
			}
			if keys := rdb.Keys(t.Context(), "storekeeper:lock:*").Val(); len(keys) != 1 {
				t.Fatalf("locks %v, want a's only", keys)
			}
			if n := rdb.XLen(t.Context(), keyspace.EventsStream).Val(); n != 1 {
				t.Fatalf("%d events, want a's job.enqueued", n)
			}
		})
	}
}

// A bulk enqueue over many stores is bounded: no script carries more
// than batchChunk stores, the answer keeps List jobs and counts the rest,
// every job is listed under the batch and paged through, and a store
// forgotten while the batch runs is left out instead of failing it.
func TestEnqueueBatchInChunks(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const n = 1201
	stores := make([]string, n)
	for i := range stores {
		stores[i] = fmt.Sprintf("s%04d", i)
	}
	ownedBy(t, rdb, "n1", stores...)
	watch := &batchScripts{rdb: rdb}
	cl := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { cl.Close() })
	cl.AddHook(watch)
	c := NewClient(cl, jobs.ClientConfig{})
	b, err := c.EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindVerify, Trigger: jobs.TriggerManual, Actor: "alice", List: 10})
	if err != nil {
		t.Fatal(err)
	}
	if watch.runs != 3 || watch.maxStores > batchChunk {
		t.Fatalf("%d batch scripts, the largest with %d stores; want 3 of at most %d", watch.runs, watch.maxStores, batchChunk)
	}
	if b.Total != n-1 || b.New != n-1 || b.Deduplicated != 0 || len(b.Jobs) != 10 || b.Jobs[0].Record.Store != "s0000" {
		t.Fatalf("batch: total %d, new %d, dedup %d, %d listed", b.Total, b.New, b.Deduplicated, len(b.Jobs))
	}
	if chunks := rdb.HLen(t.Context(), keyspace.BatchChunksKey(b.ID)).Val(); chunks != 3 {
		t.Fatalf("%d chunks recorded, want 3", chunks)
	}
	seen := map[string]bool{}
	cursor, last := "", "~"
	for pages := 0; ; pages++ {
		page, next, err := c.JobsPage(t.Context(), b.ID, cursor, 500)
		if err != nil || pages > 3 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, r := range page {
			if seen[r.Store] || r.ID >= last {
				t.Fatalf("job %s of store %s twice or out of order", r.ID, r.Store)
			}
			seen[r.Store], last = true, r.ID
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != n-1 || seen[watch.forgot] {
		t.Fatalf("the pages hold %d stores (forgotten %s listed: %v), want %d", len(seen), watch.forgot, seen[watch.forgot], n-1)
	}
}

// batchScripts watches the batch scripts: how many ran, the most stores
// one carried, and before the first it forgets a store of the second
// chunk.
type batchScripts struct {
	rdb       *redis.Client
	runs      int
	maxStores int
	forgot    string
}

func (*batchScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *batchScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if isScript(cmd) && len(args) > 6 && strings.HasPrefix(fmt.Sprint(args[6]), "storekeeper:batchchunks:") {
			if w.forgot == "" {
				w.forgot = fmt.Sprintf("s%04d", batchChunk+7)
				w.rdb.HDel(ctx, keyspace.StoresKey, w.forgot)
			}
			err := next(ctx, cmd)
			if err == nil { // not go-redis's EVALSHA that found no script
				nkeys, _ := args[2].(int)
				w.runs++
				w.maxStores = max(w.maxStores, (nkeys-4)/3)
			}
			return err
		}
		return next(ctx, cmd)
	}
}

func (*batchScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
