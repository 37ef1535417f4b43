package offsite

import (
	"context"
	"testing"
	"time"
)

// Pruning drops backups from a store's index and their manifests; their
// objects go only after two collection passes Grace apart, never while a
// manifest some index lists references them, even one listed again
// between the passes (an upload that found the object there and skipped
// it). Every backup still listed restores, on another node, after the
// last pass; the other store's objects are untouched.
func TestPruneAndCollect(t *testing.T) {
	ctx := context.Background()
	tg := open(t, "file://"+t.TempDir())
	a := newNode(t, "orders", "users")
	orders, users := a.store(t, "orders"), a.store(t, "users")
	write(t, users, 0, 200)
	mu := backup(t, users)
	if _, err := tg.Upload(ctx, users, mu, nil); err != nil {
		t.Fatal(err)
	}
	var ms []string
	for i := range 3 {
		write(t, orders, i*300, (i+1)*300)
		m := backup(t, orders)
		if _, err := tg.Upload(ctx, orders, m, nil); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m.ID)
	}
	newest := func(created map[string]time.Time) map[string]bool {
		var id string
		for k, at := range created {
			if id == "" || at.After(created[id]) {
				id = k
			}
		}
		return map[string]bool{id: true}
	}
	dropped, err := tg.Prune(ctx, "orders", newest)
	if err != nil || len(dropped) != 2 {
		t.Fatalf("prune: %v, %v; want the two older backups dropped", dropped, err)
	}
	if entries, _ := tg.Backups(ctx, "orders"); len(entries) != 1 || entries[0].ID != ms[2] {
		t.Fatalf("index after pruning: %+v", entries)
	}
	if _, err := tg.Manifest(ctx, "orders", ms[0]); err == nil {
		t.Fatal("a pruned backup's manifest is still there")
	}

	now := time.Now()
	c1, err := tg.Collect(ctx, now, time.Hour)
	if err != nil || c1.Deleted != 0 || c1.Candidates == 0 {
		t.Fatalf("first pass: %+v, %v; want candidates and nothing deleted", c1, err)
	}
	// An upload lists the oldest backup again between the passes: its
	// objects are referenced once more.
	m0, err := orders.LookupBackup(ms[0]) // local retention keeps the newest 7
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Upload(ctx, orders, m0.BackupManifest, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := tg.Collect(ctx, now.Add(30*time.Minute), time.Hour); err != nil || c.Deleted != 0 {
		t.Fatalf("a pass before Grace: %+v, %v; want nothing deleted", c, err)
	}
	c2, err := tg.Collect(ctx, now.Add(2*time.Hour), time.Hour)
	if err != nil || c2.Deleted == 0 || c2.Deleted >= c1.Candidates {
		t.Fatalf("pass after Grace: %+v, %v; want some of the %d candidates deleted, not those listed again", c2, err, c1.Candidates)
	}
	for store, ids := range map[string][]string{"orders": {ms[0], ms[2]}, "users": {mu.ID}} {
		for _, id := range ids {
			restoreElsewhere(t, tg, store, id)
		}
	}
}
