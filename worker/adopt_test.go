package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/offsite"
	"storekeeper/store"
)

// storeSum is a digest of every key and value of s.
func storeSum(t *testing.T, s *store.Store) string {
	t.Helper()
	h := sha256.New()
	if err := s.Scan(t.Context(), nil, nil, func(k, v []byte) error { fmt.Fprintf(h, "%q=%q;", k, v); return nil }); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// The disaster: node n1 (its own process) holds orders and backs it up to
// a target; its machine dies, and its backup directory with it. Node n2
// (this process) adopts orders from the target: same content, a higher
// fencing token, the job left queued for n1 settled store_moved without a
// notification. Then n1 comes back with its data directory intact: it
// holds orders as lost and serves none of it, and n2 keeps serving it.
func TestDisasterAdoptOnAnotherNode(t *testing.T) {
	vault := "file://" + t.TempDir()
	const ttl = 3 * time.Second // the shortest lease the worker allows: n1's lease and heartbeat expire soon after it dies
	b := setupFaults(t, options{redis: []redistest.Option{redistest.RequireReal()}, worker: func(c *Config) {
		c.Node, c.LeaseTTL = "n2", ttl
		c.Targets = []*offsite.Target{openTarget(t, "vault", vault)}
	}}, nil)

	// n1's machine: a store with data, served by a worker process.
	root := t.TempDir()
	dataA, backupsA := filepath.Join(root, "data"), filepath.Join(root, "backups")
	seed, err := store.Open(store.Config{DataDir: dataA, BackupDir: backupsA, Stores: []string{"orders"}, NoSync: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := seed.Store("orders")
	for i := range 2000 {
		if err := s.Set(fmt.Appendf(nil, "k%05d", i), fmt.Appendf(nil, "value %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	want := storeSum(t, s)
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	startA := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", childEnv, b.srv.Addr(), dataA, backupsA),
			childNodeEnv+"=n1", childTargetEnv+"="+vault, childLeaseTTLEnv+"="+ttl.String())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	a := startA()
	testsignal.WaitFor(t, "n1 owning orders", func() bool {
		return b.rdb.HGet(t.Context(), keyspace.StoresKey, "orders").Val() == "n1"
	})
	backup := b.waitState(t, b.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	res := backupResultOf(t, backup)
	if len(res.Targets) != 1 || !res.Targets[0].Complete {
		t.Fatalf("backup's targets %+v; want it complete on vault", res.Targets)
	}
	leaseA := b.rdb.Get(t.Context(), keyspace.LeaseKey("orders")).Val()

	// The machine dies with its backups; a job for orders waits on n1's
	// queue. While n1's lease or heartbeat lives, orders is not adoptable.
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.Wait()
	if err := os.RemoveAll(backupsA); err != nil {
		t.Fatal(err)
	}
	queued := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	if err := jobsdb.CheckAdopt(t.Context(), b.rdb, "orders", "n2", false); !errors.Is(err, jobs.ErrStoreHeld) {
		t.Fatalf("adoptable while n1's lease lives: %v", err)
	}
	testsignal.WaitForWithin(t, 3*ttl, "n1's lease and heartbeat expiring", func() bool {
		n, _ := b.rdb.Exists(t.Context(), keyspace.LeaseKey("orders"), keyspace.NodeKey("n1")).Result()
		return n == 0
	})

	adopt := b.waitState(t, b.enqueue(t, jobs.KindAdopt, "orders", jobs.Params{Node: "n2", Target: "vault"}).ID, jobs.StateSucceeded)
	var got jobs.AdoptResult
	if err := json.Unmarshal(adopt.Result, &got); err != nil {
		t.Fatal(err)
	}
	la, _ := jobs.DecodeLease(leaseA)
	if got.BackupID != res.Backup.ID || got.PreviousNode != "n1" || got.Token <= la.Token || len(got.Moved) != 1 || got.Moved[0] != queued.ID {
		t.Fatalf("adopt result %+v; want backup %s, from n1, a token above %d, job %s moved", got, res.Backup.ID, la.Token, queued.ID)
	}
	moved, _ := b.client.Get(t.Context(), queued.ID)
	if moved.State != jobs.StateFailed || moved.Reason != jobs.ReasonStoreMoved {
		t.Fatalf("the job queued for n1: %s %q", moved.State, moved.Reason)
	}
	adopted, err := b.reg.Store("orders")
	if err != nil {
		t.Fatal(err)
	}
	if sum := storeSum(t, adopted); sum != want {
		t.Fatal("the adopted store's content differs from the backup's")
	}
	// What vault holds of it is published with the adoption, not at the
	// store's first backup on n2.
	var st jobs.StoreStatus
	if err := json.Unmarshal([]byte(b.rdb.Get(t.Context(), keyspace.StatsKey("orders")).Val()), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Targets) != 1 || st.Targets[0].Target != "vault" || st.Targets[0].BackupID != res.Backup.ID {
		t.Fatalf("the adopted store's published targets %+v; want vault holding %s", st.Targets, res.Backup.ID)
	}

	// Settled before n1 comes back: n1's dispatcher would take the
	// marker from the shared outbox, which this process would never see.
	for _, n := range b.settled(t) {
		if n.JobID == queued.ID || n.JobID == adopt.ID {
			t.Fatalf("notified %+v: a moved job and an adoption are not failures", n)
		}
	}

	// n1 comes back with its data directory: it holds orders as lost.
	startA()
	testsignal.WaitFor(t, "n1 back, holding orders as lost to n2", func() bool {
		v, err := b.rdb.Get(t.Context(), keyspace.NodeKey("n1")).Result()
		var info jobs.NodeInfo
		return err == nil && json.Unmarshal([]byte(v), &info) == nil && info.Lost["orders"] == "n2"
	})
	// n2 still serves it: writes, jobs routed to it, its lease.
	if err := adopted.Set([]byte("after"), []byte("adoption")); err != nil {
		t.Fatal(err)
	}
	b.waitState(t, b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	if l, _ := jobs.DecodeLease(b.rdb.Get(t.Context(), keyspace.LeaseKey("orders")).Val()); l.Node != "n2" || l.Token != got.Token {
		t.Fatalf("orders' lease is %+v; want n2's, token %d", l, got.Token)
	}
}

// An adoption whose backup cannot be fetched (an object gone from the
// target) made no store: it is undone, so that the store is not left
// pinned to a node that does not have it. The old owner's claim works
// again and nothing stays held.
func TestFailedAdoptionIsUndone(t *testing.T) {
	dir := t.TempDir()
	vault := openTarget(t, "vault", "file://"+dir)
	b := setupFaults(t, options{redis: []redistest.Option{redistest.RequireReal()}, worker: func(c *Config) {
		c.Node = "n2"
		c.Targets = []*offsite.Target{vault}
	}}, nil)

	// n1's store, backed up to vault; n1 is gone (it never beats here).
	seed, err := store.Open(store.Config{DataDir: filepath.Join(dir, "..", "n1data"), BackupDir: filepath.Join(dir, "..", "n1backups"),
		Stores: []string{"orders"}, NoSync: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = seed.Close() })
	s, _ := seed.Store("orders")
	for i := range 2000 {
		if err := s.Set(fmt.Appendf(nil, "k%05d", i), fmt.Appendf(nil, "value %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Backup(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Upload(t.Context(), s, res.Backup.BackupManifest, nil); err != nil {
		t.Fatal(err)
	}
	b.rdb.HSet(t.Context(), keyspace.StoresKey, "orders", "n1")
	victim := res.Backup.Files[0]
	for _, f := range res.Backup.Files {
		if f.Size > victim.Size {
			victim = f
		}
	}
	if err := os.Remove(filepath.Join(dir, "objects", victim.SHA256)); err != nil {
		t.Fatal(err)
	}

	adopt := b.waitState(t, b.enqueue(t, jobs.KindAdopt, "orders", jobs.Params{Node: "n2", Target: "vault"}).ID, jobs.StateFailed)
	if len(adopt.Errors) == 0 {
		t.Fatalf("adoption failed with no error recorded: %+v", adopt)
	}
	if _, err := b.reg.Store("orders"); err == nil {
		t.Fatal("a failed adoption made the store")
	}
	if n := b.rdb.Exists(t.Context(), keyspace.HomeKey("orders")).Val(); n != 0 {
		t.Fatalf("the store stays pinned after a failed adoption: %v", b.rdb.HGetAll(t.Context(), keyspace.HomeKey("orders")).Val())
	}
	if owner := b.rdb.HGet(t.Context(), keyspace.StoresKey, "orders").Val(); owner != "n1" {
		t.Fatalf("owner %q after a failed adoption, want n1", owner)
	}
	if v, ok, err := jobsdb.ClaimLease(t.Context(), b.rdb, "orders", jobs.Lease{Node: "n1", Host: "h1", Instance: "i1"}, time.Minute); err != nil || !ok {
		t.Fatalf("n1's claim after a failed adoption: %q %v %v", v, ok, err)
	}
}
