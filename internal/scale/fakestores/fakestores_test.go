package fakestores

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/worker"
)

// A real worker on fake stores: it claims them, publishes their status,
// and runs a batch of each maintenance kind but restores and drills to
// success; the backups show in the published status.
func TestWorkerOnFakeStores(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	names := []string{"a", "b", "c"}
	w, err := worker.New(worker.Config{Redis: rdb, Stores: New(names, 5*time.Millisecond), Node: "fake1",
		TaskCheckInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	c := jobsdb.NewClient(rdb, jobs.ClientConfig{})
	var ids []string
	for _, k := range []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify} {
		b, err := c.EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: k, Trigger: jobs.TriggerManual, Actor: "test"})
		if err != nil || b.New != len(names) {
			t.Fatalf("%s batch: %+v, %v", k, b, err)
		}
		for _, e := range b.Jobs {
			ids = append(ids, e.Record.ID)
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for pending := ids; len(pending) > 0; {
		select {
		case <-deadline:
			t.Fatalf("%d jobs not finished", len(pending))
		case <-tick.C:
		}
		var still []string
		for _, id := range pending {
			r, err := c.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			switch r.State {
			case jobs.StateSucceeded:
			case jobs.StateFailed, jobs.StateCanceled:
				t.Fatalf("job %s (%s %s): %s %+v", id, r.Kind, r.Store, r.State, r)
			default:
				still = append(still, id)
			}
		}
		pending = still
	}
	raw, err := rdb.Get(t.Context(), keyspace.StatsKey("b")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var st jobs.StoreStatus
	if err := json.Unmarshal(raw, &st); err != nil || st.Node != "fake1" || st.Stats.State != jobs.StoreOpen || len(st.Backups) != 1 {
		t.Fatalf("b's published status: %s (%v)", raw, err)
	}
}
