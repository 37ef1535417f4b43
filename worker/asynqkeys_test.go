package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// The keys asynqkeys.go relies on, checked against a live asynq server.
// If this fails, asynq changed its layout: fix asynqkeys.go before
// trusting crash recovery.
func TestAsynqKeyLayout(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	const q = "node.layout"
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("x", nil), asynq.Queue(q), asynq.TaskID("t1")); err != nil {
		t.Fatal(err)
	}
	if ids := rdb.LRange(ctx, asynqPendingKey(q), 0, -1).Val(); len(ids) != 1 || ids[0] != "t1" {
		t.Fatalf("asynq changed its pending key: %s holds %v", asynqPendingKey(q), ids)
	}
	started, release := make(chan struct{}), make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{q: 1}, TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout: time.Second, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		close(started)
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("task did not start")
	}
	if ids := rdb.LRange(ctx, asynqActiveKey(q), 0, -1).Val(); len(ids) != 1 || ids[0] != "t1" {
		t.Fatalf("asynq changed its active key: %s holds %v", asynqActiveKey(q), ids)
	}
	if n := rdb.ZCard(ctx, asynqLeaseKey(q)).Val(); n != 1 {
		t.Fatalf("asynq changed its lease key: %s has %d members", asynqLeaseKey(q), n)
	}
	if st := rdb.HGet(ctx, asynqTaskKeyPrefix(q)+"t1", "state").Val(); st != "active" {
		t.Fatalf("asynq changed its task hash: state %q", st)
	}
	// Stop pulling first: once reclaim puts t1 back on pending, a server
	// still polling would start it a second time (CI saw the handler run
	// twice and the task land in retry).
	srv.Stop()
	// Reclaim moves it back exactly as asynq's requeue would.
	w := &Worker{rdb: rdb, jobs: jobsdb.NewClient(rdb, jobs.ClientConfig{}), cfg: Config{Node: "n1", Jobs: jobs.ClientConfig{}.WithDefaults()}}
	ids, err := w.reclaimOrphans(ctx, q)
	if err != nil || len(ids) != 1 {
		t.Fatalf("reclaim = %v, %v", ids, err)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(q, "t1")
	if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
		t.Fatalf("after reclaim: %+v, %v", info, err)
	}
	close(release)
}

// A task asynq left active after its lease ran out (its handler returned
// while Redis refused writes, and asynq's move kept failing) goes back to
// pending at the reconciler's next pass instead of waiting up to 90 s for
// asynq's recoverer; one this process runs, or whose lease is live, stays
// (the chaos run found jobs still pending a minute after a replica
// outage).
func TestStrandedTasksRequeued(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	const q = "node.stranded"
	cl := asynq.NewClientFromRedisClient(rdb)
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for id, lease := range map[string]int64{"expired": now.Unix() - 5, "running": now.Unix() - 5, "live": now.Unix() + 30} {
		if _, err := cl.Enqueue(asynq.NewTask("x", nil), asynq.Queue(q), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
		// As asynq's dequeue leaves it: active, with a lease.
		rdb.LRem(ctx, asynqPendingKey(q), 0, id)
		rdb.RPush(ctx, asynqActiveKey(q), id)
		rdb.ZAdd(ctx, asynqLeaseKey(q), redis.Z{Score: float64(lease), Member: id})
		rdb.HSet(ctx, asynqTaskKeyPrefix(q)+id, "state", "active")
	}
	w := &Worker{rdb: rdb, jobs: jobsdb.NewClient(rdb, jobs.ClientConfig{}), cfg: Config{Node: "n1", Jobs: jobs.ClientConfig{}.WithDefaults()},
		running: map[string]runningJob{"running": {}}}
	ids, err := w.reclaimStranded(ctx, q)
	if err != nil || len(ids) != 1 || ids[0] != "expired" {
		t.Fatalf("reclaimStranded = %v, %v; want [expired]", ids, err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for id, want := range map[string]asynq.TaskState{"expired": asynq.TaskStatePending, "running": asynq.TaskStateActive, "live": asynq.TaskStateActive} {
		info, err := insp.GetTaskInfo(q, id)
		if err != nil || info.State != want || info.Retried != 0 {
			t.Errorf("%s: %+v, %v; want %v, no retry counted", id, info, err, want)
		}
	}
}

// keyspace.AsynqDoneScript is asynq's own done, byte for byte: the worker
// recognises asynq's call by its SHA. A plain asynq server, its handler
// succeeding, sends exactly that script.
func TestAsynqDoneScript(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	sent := &redistest.RoundTrips{}
	rdb.AddHook(sent)
	const q = "node.done"
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("x", nil), asynq.Queue(q), asynq.TaskID("t1")); err != nil {
		t.Fatal(err)
	}
	srv2 := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{q: 1}, TaskCheckInterval: 10 * time.Millisecond,
		ShutdownTimeout: time.Second, LogLevel: asynq.FatalLevel})
	if err := srv2.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testsignal.WaitFor(t, "asynq counting t1 processed", func() bool {
		info, err := insp.GetQueueInfo(q)
		return err == nil && info.ProcessedTotal == 1
	})
	// Its first run is an EVALSHA refused with NOSCRIPT, then an EVAL.
	if sent.Script(keyspace.AsynqDoneScript.Hash()) == 0 {
		t.Fatal("asynq's done did not send keyspace.AsynqDoneScript: asynq changed its done script; " +
			"copy the new one into keyspace.AsynqDoneScript and asynqAckLua")
	}
}

// A successful job's end acknowledges its asynq task in the same script,
// and asynq's own done is answered without reaching Redis: the task is
// gone, asynq's processed counts (which asynqmon shows) count it once,
// and asynq's done script was never sent.
func TestJobEndAcknowledgesItsTask(t *testing.T) {
	sent := &redistest.RoundTrips{}
	b := setupWith(t, options{
		worker: func(c *Config) { c.Concurrency = 1 },
		client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
			c := srv.Client(t)
			c.AddHook(sent)
			return c
		},
	}, nil, "orders", "users")
	first := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	b.waitState(t, first.ID, jobs.StateSucceeded)
	// With one asynq worker, the next task is taken only once the first's
	// handling, asynq's done included, is over.
	second := b.enqueue(t, jobs.KindCompact, "users", jobs.Params{Force: true})
	b.waitState(t, second.ID, jobs.StateSucceeded)

	if n := sent.Script(keyspace.AsynqDoneScript.Hash()); n != 0 {
		t.Fatalf("asynq's done reached Redis %d times for jobs whose end had acknowledged their tasks", n)
	}
	q := jobs.NodeQueue("n1")
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	testsignal.WaitFor(t, "both tasks gone from the queue", func() bool {
		info, err := insp.GetQueueInfo(q)
		return err == nil && info.Active == 0 && info.Pending == 0 && info.Size == 0
	})
	info, err := insp.GetQueueInfo(q)
	if err != nil {
		t.Fatal(err)
	}
	if info.Processed != 2 || info.ProcessedTotal != 2 || info.Failed != 0 {
		t.Fatalf("asynq counts %d processed today, %d in all, %d failed; want 2, 2, 0", info.Processed, info.ProcessedTotal, info.Failed)
	}
	for _, id := range []string{first.ID, second.ID} {
		if n := b.rdb.Exists(t.Context(), keyspace.AsynqTaskKeyPrefix(q)+id).Val(); n != 0 {
			t.Errorf("task %s's hash is still there", id)
		}
	}
	day := keyspace.AsynqProcessedKey(q, time.Now())
	if ttl := b.rdb.TTL(t.Context(), day).Val(); ttl <= 80*24*time.Hour {
		t.Errorf("%s expires in %v, want about 90 days as asynq sets it", day, ttl)
	}
}

// The acknowledgement is part of the end: with Jobs.MinReplicas, asynq
// keeps the task until the end is confirmed on replicas, so the end
// leaves it to asynq's own done.
func TestNoAckWhenTheEndMustBeConfirmed(t *testing.T) {
	w := &Worker{cfg: Config{Jobs: jobs.ClientConfig{MinReplicas: 1}}}
	if a := w.ackFor(context.Background()); a != nil {
		t.Fatalf("ackFor with MinReplicas 1 = %+v, want nil", a)
	}
	w.cfg.Jobs.MinReplicas = 0
	if a := w.ackFor(context.Background()); a != nil {
		t.Fatalf("ackFor outside an asynq handler = %+v, want nil", a)
	}
}

// asynqClient answers only a done it was told about, once.
func TestAsynqClientAnswersOnlyAcknowledgedDone(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	sent := &redistest.RoundTrips{}
	rdb.AddHook(sent)
	acked := &ackedTasks{}
	c := asynqClient{rdb, acked}
	ack := keyspace.AsynqAck{Queue: "node.n1", TaskID: "t1", At: time.Now()}
	keys := []string{keyspace.AsynqActiveKey(ack.Queue), keyspace.AsynqLeaseKey(ack.Queue), ack.TaskKey(),
		keyspace.AsynqProcessedKey(ack.Queue, ack.At), keyspace.AsynqProcessedTotalKey(ack.Queue)}
	run := func() error {
		return keyspace.AsynqDoneScript.Run(t.Context(), c, keys, ack.TaskID, ack.At.Unix(), int64(1<<63-1)).Err()
	}
	acked.add(ack.TaskKey())
	if err := run(); err != nil {
		t.Fatalf("an acknowledged done: %v", err)
	}
	if n := sent.Script(keyspace.AsynqDoneScript.Hash()); n != 0 {
		t.Fatalf("an acknowledged done reached Redis %d times", n)
	}
	// Asked again, it goes to Redis, where the task is not active.
	if err := run(); err == nil || !strings.Contains(err.Error(), "NOT FOUND") {
		t.Fatalf("a second done = %v, want Redis's NOT FOUND", err)
	}
	// Another task's done is not answered.
	acked.add(ack.TaskKey())
	keys[2] = keyspace.AsynqTaskKeyPrefix(ack.Queue) + "t2"
	if err := run(); err == nil {
		t.Fatal("the done of a task never acknowledged was answered")
	}
	if sent.Script(keyspace.AsynqDoneScript.Hash()) == 0 {
		t.Fatal("no done reached Redis")
	}
}
