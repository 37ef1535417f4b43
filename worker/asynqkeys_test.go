package worker

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
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
