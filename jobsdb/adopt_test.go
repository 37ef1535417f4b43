package jobsdb

import (
	"errors"
	"slices"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// An adoption claims a store only from an owner that is gone: refused
// while the lease is held (even with force while its node is up) or while
// the owning node beats; with force once that node is down. The claim
// survives being sent several times, bumps the fencing token once, and
// pins the store: the old owner's claims are refused from then on, even
// with the lease free.
func TestAdoptLease(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	a := jobs.Lease{Node: "n1", Host: "h1", Instance: "inst-a"}
	b := jobs.Lease{Node: "n2", Host: "h2", Instance: "inst-b"}
	va, ok, err := ClaimLease(ctx, rdb, "orders", a, time.Minute)
	if err != nil || !ok {
		t.Fatal(err)
	}
	beat := func(node string) {
		if err := NodeBeat(ctx, rdb, jobs.NodeInfo{Node: node}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	beat("n1")
	for _, force := range []bool{false, true} {
		if _, _, err := AdoptLease(ctx, rdb, "orders", b, force, time.Minute); !errors.Is(err, jobs.ErrStoreHeld) {
			t.Fatalf("adopt (force %v) of a store whose owner is up: %v", force, err)
		}
		if err := CheckAdopt(ctx, rdb, "orders", "n2", force); !errors.Is(err, jobs.ErrStoreHeld) {
			t.Fatalf("check (force %v) of a store whose owner is up: %v", force, err)
		}
	}
	// n1 dies: its heartbeat goes, its lease is still there.
	rdb.Del(ctx, keyspace.NodeKey("n1"))
	if _, _, err := AdoptLease(ctx, rdb, "orders", b, false, time.Minute); !errors.Is(err, jobs.ErrStoreHeld) {
		t.Fatalf("adopt without force of a held lease: %v", err)
	}
	if err := CheckAdopt(ctx, rdb, "orders", "n2", true); err != nil {
		t.Fatalf("check with force once the owner is down: %v", err)
	}
	if v := rdb.Get(ctx, keyspace.LeaseKey("orders")).Val(); v != va || rdb.Exists(ctx, keyspace.HomeKey("orders")).Val() != 0 {
		t.Fatalf("a check changed the lease (%q) or pinned the store", v)
	}
	r := &replayScripts{Match: "inst-b", Times: 3}
	vb, prev, err := AdoptLease(ctx, replayClient(t, srv, r), "orders", b, true, time.Minute)
	if err != nil || prev != "n1" {
		t.Fatalf("forced adopt: %q %q %v", vb, prev, err)
	}
	lb, _ := jobs.DecodeLease(vb)
	if la, _ := jobs.DecodeLease(va); lb.Node != "n2" || lb.Token != la.Token+1 || r.runs.Load() < 2 {
		t.Fatalf("lease %+v after a claim sent %d times; want n2 with token %d", lb, r.runs.Load(), la.Token+1)
	}
	if owner := rdb.HGet(ctx, keyspace.StoresKey, "orders").Val(); owner != "n2" {
		t.Fatalf("owner %q", owner)
	}
	// n1 comes back: held by n2 while n2 holds it, and still refused once
	// the lease is free (n2 down too): the store lives on n2 now.
	beat("n1")
	if held, ok, err := ClaimLease(ctx, rdb, "orders", a, time.Minute); err != nil || ok || held != vb {
		t.Fatalf("the old owner's claim: %q %v %v", held, ok, err)
	}
	rdb.Del(ctx, keyspace.LeaseKey("orders"))
	held, ok, err := ClaimLease(ctx, rdb, "orders", a, time.Minute)
	if h, _ := jobs.DecodeLease(held); err != nil || ok || h.Node != "n2" {
		t.Fatalf("the old owner's claim of a free lease: %q %v %v", held, ok, err)
	}
	// n2 itself claims it again as ever (a restart).
	if _, ok, err := ClaimLease(ctx, rdb, "orders", jobs.Lease{Node: "n2", Host: "h2", Instance: "inst-c"}, time.Minute); err != nil || !ok {
		t.Fatalf("the adopter's claim after a restart: %v %v", ok, err)
	}
}

// An adoption that made no store is undone: its lease released, the pin
// and the owner put back as they were, however often the undo is sent.
// The old owner then serves its store again; a store pinned by an earlier
// adoption keeps that pin; an undo of an adoption a later one replaced
// changes nothing.
func TestAbandonAdopt(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	n0 := jobs.Lease{Node: "n0", Host: "h0", Instance: "inst-0"}
	n1 := jobs.Lease{Node: "n1", Host: "h1", Instance: "inst-1"}
	n2 := jobs.Lease{Node: "n2", Host: "h2", Instance: "inst-2"}
	if _, ok, err := ClaimLease(ctx, rdb, "orders", n1, time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	rdb.Del(ctx, keyspace.LeaseKey("orders")) // n1 is gone, its lease expired

	v2, prev, err := AdoptLease(ctx, rdb, "orders", n2, false, time.Minute)
	if err != nil || prev != "n1" {
		t.Fatal(prev, err)
	}
	r := &replayScripts{Match: "inst-2", Times: 3}
	if err := AbandonAdopt(ctx, replayClient(t, srv, r), "orders", "n2", v2); err != nil || r.runs.Load() < 2 {
		t.Fatalf("abandon sent %d times: %v", r.runs.Load(), err)
	}
	if n := rdb.Exists(ctx, keyspace.LeaseKey("orders"), keyspace.HomeKey("orders")).Val(); n != 0 {
		t.Fatalf("%d of the lease and the pin left after the undo", n)
	}
	if owner := rdb.HGet(ctx, keyspace.StoresKey, "orders").Val(); owner != "n1" {
		t.Fatalf("owner %q after the undo, want n1 back", owner)
	}
	if _, ok, err := ClaimLease(ctx, rdb, "orders", n1, time.Minute); err != nil || !ok {
		t.Fatalf("the old owner's claim after the undo: %v %v", ok, err)
	}

	// Pinned to n0 by an earlier adoption; n0 and n1 gone; n2's adoption
	// fails: the pin is n0's again.
	rdb.Del(ctx, keyspace.LeaseKey("orders"))
	if _, _, err := AdoptLease(ctx, rdb, "orders", n0, false, time.Minute); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, keyspace.LeaseKey("orders"))
	v2, _, err = AdoptLease(ctx, rdb, "orders", n2, false, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := AbandonAdopt(ctx, rdb, "orders", "n2", v2); err != nil {
		t.Fatal(err)
	}
	if home := rdb.HGet(ctx, keyspace.HomeKey("orders"), "node").Val(); home != "n0" {
		t.Fatalf("pin %q after the undo, want n0's back", home)
	}
	if _, ok, _ := ClaimLease(ctx, rdb, "orders", n1, time.Minute); ok {
		t.Fatal("n1 claimed a store pinned to n0")
	}
	if _, ok, err := ClaimLease(ctx, rdb, "orders", n0, time.Minute); err != nil || !ok {
		t.Fatalf("n0's claim: %v %v", ok, err)
	}

	// An undo that comes after a later adoption changes nothing.
	rdb.Del(ctx, keyspace.LeaseKey("orders"))
	v2, _, _ = AdoptLease(ctx, rdb, "orders", n2, false, time.Minute)
	rdb.Del(ctx, keyspace.LeaseKey("orders"))
	v1, _, err := AdoptLease(ctx, rdb, "orders", n1, false, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := AbandonAdopt(ctx, rdb, "orders", "n2", v2); err != nil {
		t.Fatal(err)
	}
	if rdb.Get(ctx, keyspace.LeaseKey("orders")).Val() != v1 || rdb.HGet(ctx, keyspace.HomeKey("orders"), "node").Val() != "n1" {
		t.Fatal("undo of a replaced adoption changed the later one's lease or pin")
	}
}

// Jobs of the store queued for its old owner are settled failed,
// store_moved, once each however often it runs; other stores' jobs and
// the adopter's are left alone.
func TestSettleMoved(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	c := NewClient(rdb, jobs.ClientConfig{})
	for _, n := range []string{"n1", "n2"} {
		rdb.SAdd(ctx, keyspace.NodesKey, n)
	}
	ownedBy(t, rdb, "n1", "orders", "users")
	enq := func(kind jobs.Kind, store string, p jobs.Params) jobs.Record {
		t.Helper()
		e, err := c.Enqueue(ctx, jobs.Request{Kind: kind, Store: store, Params: p, Trigger: jobs.TriggerManual, Actor: "a"})
		if err != nil {
			t.Fatal(err)
		}
		return e.Record
	}
	backup := enq(jobs.KindBackup, "orders", jobs.Params{})
	verify := enq(jobs.KindVerify, "orders", jobs.Params{})
	other := enq(jobs.KindBackup, "users", jobs.Params{})
	adopt := enq(jobs.KindAdopt, "orders", jobs.Params{Node: "n2", Target: "vault"})
	if adopt.Node != "n2" || adopt.Queue != "node.n2" {
		t.Fatalf("adopt routed to %s/%s, want n2", adopt.Node, adopt.Queue)
	}
	if _, err := c.Enqueue(ctx, jobs.Request{Kind: jobs.KindRestore, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"}); !errors.Is(err, jobs.ErrRestoreInProgress) {
		t.Fatalf("a restore while an adoption is in flight: %v", err)
	}
	for i := range 2 {
		moved, err := c.SettleMoved(ctx, "orders", "n2", "a")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(moved)
		want := []string{backup.ID, verify.ID}
		slices.Sort(want)
		if i == 1 {
			want = nil
		}
		if !slices.Equal(moved, want) {
			t.Fatalf("run %d settled %v, want %v", i+1, moved, want)
		}
	}
	for _, id := range []string{backup.ID, verify.ID} {
		r, _ := c.Get(ctx, id)
		if r.State != jobs.StateFailed || r.Reason != jobs.ReasonStoreMoved {
			t.Fatalf("job %s: %s %q", id, r.State, r.Reason)
		}
	}
	for _, id := range []string{other.ID, adopt.ID} {
		if r, _ := c.Get(ctx, id); r.State != jobs.StatePending {
			t.Fatalf("job %s of %s was touched: %s", id, r.Store, r.State)
		}
	}
	hist, _, err := History(ctx, rdb, jobs.HistoryQuery{Limit: 10})
	if err != nil || len(hist) != 2 {
		t.Fatalf("history %+v %v; want the two moved jobs once each", hist, err)
	}
}
