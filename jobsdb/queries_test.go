package jobsdb

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

func TestStoreQueries(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	if id, err := LastEventID(ctx, rdb); err != nil || id != "0-0" {
		t.Fatalf("LastEventID on an empty stream = %q, %v", id, err)
	}
	if got, err := PublishedStatus(ctx, rdb, nil); err != nil || len(got) != 0 {
		t.Fatalf("PublishedStatus(none) = %v, %v", got, err)
	}
	ownedBy(t, rdb, "n2", "users")
	ownedBy(t, rdb, "n1", "orders")
	names, err := StoreNames(ctx, rdb)
	if err != nil || !slices.Equal(names, []string{"orders", "users"}) {
		t.Fatalf("StoreNames = %v, %v", names, err)
	}
	owners, err := StoreOwners(ctx, rdb)
	if err != nil || len(owners) != 2 || owners["orders"] != "n1" || owners["users"] != "n2" {
		t.Fatalf("StoreOwners = %v, %v", owners, err)
	}
	js, _ := json.Marshal(jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}})
	rdb.Set(ctx, keyspace.StatsKey("orders"), js, 0)
	got, err := PublishedStatus(ctx, rdb, []string{"orders", "users"})
	if err != nil || string(got[0]) != string(js) || got[1] != nil {
		t.Fatalf("PublishedStatus = %q, %v", got, err)
	}
	if node, st, err := StoreOwnerAndStatus(ctx, rdb, "orders"); err != nil || node != "n1" || string(st) != string(js) {
		t.Fatalf("StoreOwnerAndStatus(orders) = %q, %q, %v", node, st, err)
	}
	if node, st, err := StoreOwnerAndStatus(ctx, rdb, "users"); err != nil || node != "n2" || st != nil {
		t.Fatalf("StoreOwnerAndStatus(users) = %q, %q, %v", node, st, err)
	}
	if _, _, err := StoreOwnerAndStatus(ctx, rdb, "nope"); !errors.Is(err, jobs.ErrUnknownStore) {
		t.Fatalf("StoreOwnerAndStatus(nope): %v, want ErrUnknownStore", err)
	}
	id, err := Append(ctx, rdb, keyspace.EventsStream, 10, jobs.Event{Type: jobs.EventNodeUp, Node: "n1", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if last, err := LastEventID(ctx, rdb); err != nil || last != id {
		t.Fatalf("LastEventID = %q, %v; want %q", last, err, id)
	}
}

// jobsOf is every job of batch, or without one every job in flight
// (JobsPage without a limit).
func jobsOf(ctx context.Context, c *Client, batch string) ([]jobs.Record, error) {
	recs, _, err := c.JobsPage(ctx, batch, "", 0)
	return recs, err
}

// JobsPage without a batch reads every queue's unfinished jobs, newest
// first, and drops a job once it has finished.
func TestInFlight(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	c := NewClient(rdb, jobs.ClientConfig{})
	if got, err := jobsOf(ctx, c, ""); err != nil || len(got) != 0 {
		t.Fatalf("InFlight on an empty Redis = %v, %v", got, err)
	}
	ownedBy(t, rdb, "n1", "orders")
	ownedBy(t, rdb, "n2", "users")
	var ids []string
	for _, st := range []string{"orders", "users", "orders"} {
		kind := map[int]jobs.Kind{0: jobs.KindCompact, 1: jobs.KindCompact, 2: jobs.KindBackup}[len(ids)]
		e, err := c.Enqueue(ctx, jobs.Request{Kind: kind, Store: st, Trigger: jobs.TriggerManual, Actor: "a"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.Record.ID)
	}
	got, err := jobsOf(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, r := range got {
		gotIDs = append(gotIDs, r.ID)
	}
	if !slices.Equal(gotIDs, []string{ids[2], ids[1], ids[0]}) {
		t.Fatalf("InFlight = %v, want %v newest first", gotIDs, ids)
	}
	if _, err := c.Cancel(ctx, ids[1], "a"); err != nil {
		t.Fatal(err)
	}
	if got, err := jobsOf(ctx, c, ""); err != nil || len(got) != 2 || got[0].ID != ids[2] || got[1].ID != ids[0] {
		t.Fatalf("after a cancel, InFlight = %v, %v", got, err)
	}
}
