package jobsdb

import (
	"errors"
	"testing"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// A restore that has started cannot be canceled: its attempt may already
// have replaced the store with the backup, and a cancel recorded over it
// would hide the rollback (the chaos run found a canceled restore whose
// store had been rolled back, and the writes it undid reported lost). One
// still waiting is canceled as any job is.
func TestStartedRestoreIsNotCancelable(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	ownedBy(t, rdb, "n1", "orders", "sessions")
	c := NewClient(rdb, jobs.ClientConfig{})
	waiting, err := c.Enqueue(ctx, jobs.Request{Kind: jobs.KindRestore, Store: "sessions", Trigger: jobs.TriggerManual, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := c.Cancel(ctx, waiting.Record.ID, "alice"); err != nil || rec.State != jobs.StateCanceled {
		t.Fatalf("cancel of a restore not started: %+v, %v", rec, err)
	}
	started, err := c.Enqueue(ctx, jobs.Request{Kind: jobs.KindRestore, Store: "orders", Trigger: jobs.TriggerManual, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	// As the worker's start leaves it.
	id := started.Record.ID
	if err := rdb.HSet(ctx, keyspace.RecordKey(id), "state", string(jobs.StateActive), "attempts", 1, "run", "r1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = c.Cancel(ctx, id, "alice")
	if !errors.Is(err, jobs.ErrNotCancelable) {
		t.Fatalf("cancel of a started restore: %v; want ErrNotCancelable", err)
	}
	if rec, _ := c.Get(ctx, id); rec.State != jobs.StateActive {
		t.Errorf("the started restore is %s after a refused cancel", rec.State)
	}
	// A compaction that started is canceled: it undoes nothing.
	comp, err := c.Enqueue(ctx, jobs.Request{Kind: jobs.KindCompact, Store: "sessions", Trigger: jobs.TriggerManual, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	rdb.HSet(ctx, keyspace.RecordKey(comp.Record.ID), "state", string(jobs.StateActive), "attempts", 1, "run", "r2")
	if rec, err := c.Cancel(ctx, comp.Record.ID, "alice"); err != nil || rec.State != jobs.StateCanceled {
		t.Errorf("cancel of a started compaction: %+v, %v", rec, err)
	}
}
