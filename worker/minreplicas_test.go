package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

// With Jobs.MinReplicas 1, a job whose end the replica does not confirm
// is not acknowledged to asynq: its end is written on the primary, but
// asynq keeps the task and tries it again — each attempt finds the job
// ended, does not run it, and checks again — without using up its
// retries. Once the replica is back, the next attempt confirms and
// acknowledges: the task leaves asynq, and the job has one fate, told
// once, on the replica too.
func TestUnconfirmedEndIsNotAcknowledged(t *testing.T) {
	g := newGate()
	var attempts testsignal.Signal[string] // each attempt's end, by job
	attempts.Init(t)
	b := setupWith(t, options{worker: func(c *Config) {
		c.Jobs.MinReplicas, c.Jobs.MinReplicasTimeout = 1, 200*time.Millisecond
		c.LeaseTTL = 3 * time.Second
	}}, func(w *Worker) {
		w.handlers[jobs.KindCompact] = g.handler(compactJob)
		w.attemptDone = func(p jobs.Payload) { attempts.Signal(p.JobID) }
	}, "orders")
	// The worker started before the replica: its claim could not be
	// confirmed, so it serves the store once a heartbeat confirms one.
	if b.w.serving("orders") {
		t.Fatal("the store is served under a claim no replica confirmed")
	}
	rep := b.srv.StartReplica(t)
	testsignal.WaitFor(t, "the claim confirmed by a heartbeat", func() bool { return b.w.serving("orders") })
	insp := asynq.NewInspectorFromRedisClient(b.rdb)

	rec := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	if n := g.waitStarted(t); n != 1 {
		t.Fatalf("attempt %d started", n)
	}
	if err := rep.Pause(); err != nil {
		t.Fatal(err)
	}
	g.finish <- nil
	attempts.Wait() // the attempt that ran the job
	if r, err := b.client.Get(t.Context(), rec.ID); err != nil || r.State != jobs.StateSucceeded {
		t.Fatalf("after the attempt: %+v, %v; want succeeded on the primary", r, err)
	}
	attempts.Wait() // an attempt that found the job ended, and could not confirm it either
	info, err := insp.GetTaskInfo("node.n1", rec.ID)
	if err != nil {
		t.Fatalf("the task of a job whose end is not confirmed left asynq: %v", err)
	}
	if info.Retried != 0 {
		t.Errorf("the task used up %d retries waiting for the replica; want none", info.Retried)
	}
	select {
	case n := <-g.started:
		t.Fatalf("the job ran again (attempt %d): its end was there to find", n)
	default:
	}

	if err := rep.Resume(); err != nil {
		t.Fatal(err)
	}
	testsignal.WaitFor(t, "the task acknowledged once the replica is back", func() bool {
		_, err := insp.GetTaskInfo("node.n1", rec.ID)
		return errors.Is(err, asynq.ErrTaskNotFound)
	})
	if st, err := rep.Client(t).HGet(t.Context(), keyspace.RecordKey(rec.ID), "state").Result(); err != nil || jobs.State(st) != jobs.StateSucceeded {
		t.Fatalf("on the replica the job is %q, %v; want succeeded", st, err)
	}
	if h := b.history(t, rec.ID); len(h) != 1 {
		t.Fatalf("%d history entries", len(h))
	}
	var started, succeeded int
	for _, e := range b.events(t, rec.ID) {
		switch e.Type {
		case jobs.EventJobStarted:
			started++
		case jobs.EventJobSucceeded:
			succeeded++
		}
	}
	if started != 1 || succeeded != 1 {
		t.Fatalf("%d job.started and %d job.succeeded; want one each", started, succeeded)
	}
}
