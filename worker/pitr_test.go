package worker

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
)

// shipping makes a test worker ship its stores' commit logs to a file
// target.
func shipping(t *testing.T) options {
	tg := openTarget(t, "vault", "file://"+t.TempDir())
	return options{
		store: func(c *store.Config) { c.Ship = true },
		worker: func(c *Config) {
			c.Targets = []*offsite.Target{tg}
			sh, err := ship.New(ship.Config{Dir: t.TempDir(), Targets: c.Targets, Interval: 10 * time.Millisecond, Logger: quietLogger()}, c.Registry)
			if err != nil {
				t.Fatal(err)
			}
			c.Shipper = sh
		},
	}
}

func restoreResultOf(t *testing.T, r jobs.Record) jobs.RestoreResult {
	t.Helper()
	var res jobs.RestoreResult
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatalf("restore result %s: %v", r.Result, err)
	}
	return res
}

// The automatic restore of a corrupt store rebuilds it as it was when the
// damage was found, from its backup and the shipped commit log: every
// write shipped before then comes back (a plain restore would lose them
// all), and the notification counts them.
func TestAutoRestoreReplaysTheShippedLog(t *testing.T) {
	rcv := newReceiver(t, nil)
	o := shipping(t)
	ow := o.worker
	o.worker = func(c *Config) { ow(c); c.Webhooks = []Webhook{rcv.webhook()} }
	b := setupWith(t, o, nil, "orders")
	s, _ := b.reg.Store("orders")
	writeKeys(t, s, 0, 20000, "v1")
	b.run(t, jobs.KindCompact, "orders", jobs.Params{Force: true}) // into sstables
	b.run(t, jobs.KindBackup, "orders", jobs.Params{})
	const after = 300
	writeKeys(t, s, 20000, 20000+after, "after-backup") // a plain restore would lose these
	if err := s.WaitShipped(t.Context()); err != nil {
		t.Fatal(err)
	}

	corruptLargestSST(t, filepath.Join(b.reg.DataDir(), "orders"))
	b.run(t, jobs.KindVerify, "orders", jobs.Params{})
	corrupt := b.waitEvent(t, jobs.EventStoreCorrupt, "orders", nil)
	if corrupt.Action != ActionAutoRestore || corrupt.RestoreJobID == "" {
		t.Fatalf("store.corrupt %+v", corrupt)
	}
	restore := b.waitState(t, corrupt.RestoreJobID, jobs.StateSucceeded)
	res := restoreResultOf(t, restore)
	if res.Log == nil || res.Log.Writes < after || res.Log.LastWriteAt.IsZero() {
		t.Fatalf("restore result %+v (log %+v): want at least %d writes replayed", res, res.Log, after)
	}
	for i := 0; i < 20000+after; i++ {
		v, err := s.Get(fmt.Appendf(nil, "key%06d", i))
		if err != nil {
			t.Fatalf("key %d, shipped before the damage was found, is missing after the automatic restore: %v", i, err)
		}
		if want := "v1-"; i >= 20000 {
			if want = "after-backup-"; !strings.HasPrefix(string(v), want) {
				t.Fatalf("key %d: %q", i, v)
			}
		}
	}
	nr := rcv.waitFor(t, jobs.EventStoreRestored, nil)
	if !strings.Contains(nr.Summary, fmt.Sprintf("plus %d writes", res.Log.Writes)) || !strings.Contains(nr.Summary, "not shipped") {
		t.Fatalf("restored notification: %s", nr.Summary)
	}
	if st, _ := s.State(); st != store.StateOpen {
		t.Fatalf("store state after restore: %v", st)
	}
}

// momentAfterBackup writes keys [0, backedUp) ("v1"), backs the store up,
// writes [backedUp, before) ("v1"), takes the moment, writes [before,
// after) ("after"), and returns the moment once everything is shipped.
func momentAfterBackup(t *testing.T, b *bundle, s *store.Store, backedUp, before, after int) time.Time {
	t.Helper()
	writeKeys(t, s, 0, backedUp, "v1")
	b.run(t, jobs.KindBackup, s.Name(), jobs.Params{})
	writeKeys(t, s, backedUp, before, "v1")
	at := time.Now()
	writeKeys(t, s, before, after, "after")
	if err := s.WaitShipped(t.Context()); err != nil {
		t.Fatal(err)
	}
	return at
}

// A restore job with Params.At restores the store as it was then and
// names the last write included.
func TestRestoreJobToAMoment(t *testing.T) {
	b := setupWith(t, shipping(t), nil, "orders")
	s, _ := b.reg.Store("orders")
	at := momentAfterBackup(t, b, s, 100, 200, 300)
	r := b.run(t, jobs.KindRestore, "orders", jobs.Params{At: at.UTC()})
	res := restoreResultOf(t, r)
	if res.Log == nil || res.Log.Writes != 100 || res.Log.LastWriteAt.After(at) || !res.Log.At.Equal(at.UTC()) {
		t.Fatalf("restore result %+v, log %+v", res, res.Log)
	}
	if _, err := s.Get([]byte("key000199")); err != nil {
		t.Fatalf("a write before the moment is missing: %v", err)
	}
	if _, err := s.Get([]byte("key000200")); err == nil {
		t.Fatal("a write after the moment is in the restored store")
	}
}

// publishedStatus is the store's status as its owner last published it.
func publishedStatus(t *testing.T, b *bundle, name string) jobs.StoreStatus {
	t.Helper()
	var st jobs.StoreStatus
	if err := json.Unmarshal([]byte(b.rdb.Get(t.Context(), keyspace.StatsKey(name)).Val()), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A shipping store's status says where its commit log starts, which the
// API refuses moments before, and whether each target is encrypted,
// which it refuses a reencrypt without. The start is a true bound: a
// restore to a moment just before it fails as a job would. Once the
// store is restored, its log goes back through its parent timeline: the
// start stays the same, found by the shipper from the parents' records.
func TestStatusSaysWhereTheLogStarts(t *testing.T) {
	b := setupWith(t, shipping(t), nil, "orders")
	s, _ := b.reg.Store("orders")
	at := momentAfterBackup(t, b, s, 100, 200, 300)
	st := publishedStatus(t, b, "orders")
	tl, err := s.Timeline()
	if err != nil {
		t.Fatal(err)
	}
	if !st.LogStart.Equal(tl.Created) || st.LogStart.After(at) {
		t.Fatalf("published log start %v, want the timeline's creation %v (before %v)", st.LogStart, tl.Created, at)
	}
	if len(st.Targets) != 1 || st.Targets[0].Encrypted == nil || *st.Targets[0].Encrypted {
		t.Fatalf("published targets %+v: want vault, not encrypted", st.Targets)
	}
	early := b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{At: st.LogStart.Add(-time.Millisecond)})
	if r := b.waitState(t, early.ID, jobs.StateFailed); len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Error, ship.ErrNoPoint.Error()) {
		t.Fatalf("restore to just before the log starts: %+v, want %v", r.Errors, ship.ErrNoPoint)
	}
	b.run(t, jobs.KindRestore, "orders", jobs.Params{At: at.UTC()})
	if now, _ := s.Timeline(); now.ID == tl.ID || now.Parent == nil {
		t.Fatalf("timeline after the restore: %+v, want a new one branched off %s", now, tl.ID)
	}
	if err := b.w.cfg.Shipper.Drain(t.Context(), "orders"); err != nil { // a tick: the shipper follows the parents
		t.Fatal(err)
	}
	b.run(t, jobs.KindVerify, "orders", jobs.Params{}) // its end publishes the status
	if st := publishedStatus(t, b, "orders"); !st.LogStart.Equal(tl.Created) {
		t.Fatalf("published log start %v after a restore, want the first timeline's creation %v", st.LogStart, tl.Created)
	}
}

// A target down past --ship-buffer: the oldest segments are dropped as a
// gap, announced once (store.ship_gap, with the backup that re-anchors
// the log), the store keeps taking writes, a restore to a moment inside
// the gap fails saying so, and one after the re-anchoring backup works.
func TestShipGapIsAnnouncedAndReanchored(t *testing.T) {
	dir := t.TempDir()
	tg := openTarget(t, "vault", "file://"+dir)
	var sh *ship.Shipper
	b := setupWith(t, options{
		store: func(c *store.Config) { c.Ship = true },
		worker: func(c *Config) {
			c.Targets = []*offsite.Target{tg}
			var err error
			sh, err = ship.New(ship.Config{Dir: t.TempDir(), Targets: c.Targets, Interval: 5 * time.Millisecond, SegmentSize: 1024, Buffer: 4096, Logger: quietLogger()}, c.Registry)
			if err != nil {
				t.Fatal(err)
			}
			c.Shipper = sh
		},
	}, nil, "orders")
	s, _ := b.reg.Store("orders")
	writeKeys(t, s, 0, 50, "v1")
	b.run(t, jobs.KindBackup, "orders", jobs.Params{})
	if err := s.WaitShipped(t.Context()); err != nil {
		t.Fatal(err)
	}

	// The target goes away: its directory becomes a file.
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	inGap := time.Now()
	// About 15 KiB of log that does not compress: past the 4 KiB buffer.
	for i := 50; i < 150; i++ {
		if err := s.Set(fmt.Appendf(nil, "key%06d", i), randomBytes(t, 100)); err != nil {
			t.Fatal(err)
		}
	}
	gap := b.waitEvent(t, jobs.EventShipGap, "orders", nil)
	if gap.JobID == "" || !strings.Contains(gap.Error, "ship-buffer") {
		t.Fatalf("store.ship_gap %+v", gap)
	}
	if st := sh.Stats("orders"); len(st.Gaps) == 0 || st.PendingBytes > 4096 {
		t.Fatalf("shipper stats %+v: want a gap and at most 4 KiB kept", st)
	}

	// The target comes back; the backup the gap enqueued re-anchors.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	b.waitState(t, gap.JobID, jobs.StateSucceeded)
	writeKeys(t, s, 150, 160, "after")
	if err := s.WaitShipped(t.Context()); err != nil {
		t.Fatal(err)
	}
	refused := b.waitState(t, b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{At: inGap.UTC()}).ID, jobs.StateFailed)
	if n := len(refused.Errors); n == 0 || !strings.Contains(refused.Errors[n-1].Error, "gap") {
		t.Fatalf("restore to a moment inside the gap: %+v", refused.Errors)
	}
	r := b.run(t, jobs.KindRestore, "orders", jobs.Params{At: time.Now().UTC()})
	// Every gap recorded while the target was down enqueued a backup
	// (deduplicated while one is in flight): the newest may be younger
	// than the last writes, and then nothing is left to replay.
	if res := restoreResultOf(t, r); res.Log == nil || res.Log.Writes > 10 {
		t.Fatalf("restore after the re-anchoring backup: %+v", res.Log)
	}
	for i := 0; i < 160; i++ {
		if _, err := s.Get(fmt.Appendf(nil, "key%06d", i)); err != nil {
			t.Fatalf("key %d after restoring to now: %v", i, err)
		}
	}
}

// A drill at a moment proves the store restorable to it without touching
// the store: the backup is proven, the log replayed, CheckLevels passes.
func TestDrillAtAMoment(t *testing.T) {
	b := setupWith(t, shipping(t), nil, "orders")
	s, _ := b.reg.Store("orders")
	at := momentAfterBackup(t, b, s, 100, 150, 160)
	tl, _ := s.Timeline()
	r := b.run(t, jobs.KindDrill, "orders", jobs.Params{At: at.UTC()})
	var res jobs.DrillResult
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Log == nil || res.Log.Writes != 50 || res.Log.Timeline != tl.ID || res.Log.LastWriteAt.After(at) || res.Points == 0 {
		t.Fatalf("drill result %+v, log %+v", res, res.Log)
	}
	if tl2, _ := s.Timeline(); tl2.ID != tl.ID {
		t.Fatal("a drill started a new timeline: it touched the store")
	}
	if _, err := s.Get([]byte("key000155")); err != nil {
		t.Fatalf("a drill changed the live store: %v", err)
	}
}

// randomBytes returns n bytes that do not compress.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// A gap's announcement says why the writes were lost: the buffer running
// full while a target was down, a local segment found damaged (whose
// first write's time the damage may hide), or writes a re-anchoring found
// in no WAL and on no target (committed before the first write kept).
func TestGapTextSaysWhy(t *testing.T) {
	since := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	full := gapText(ship.Gap{Timeline: "tl", From: 10, To: 20, Since: since}, "n1")
	if !strings.Contains(full, "writes 10 to 19 of timeline tl, committed from 2026-12-05T10:00:00Z") || !strings.Contains(full, "--ship-buffer") ||
		!strings.Contains(full, "between 2026-12-05T10:00:00Z and the next backup") {
		t.Errorf("a full buffer's gap: %s", full)
	}
	damaged := gapText(ship.Gap{Timeline: "tl", From: 10, To: 20, Cause: "damaged on the local disk: checksum"}, "n1")
	if !strings.Contains(damaged, "damaged on the local disk: checksum") || strings.Contains(damaged, "--ship-buffer") || strings.Contains(damaged, "0001-01-01") {
		t.Errorf("a damaged segment's gap: %s", damaged)
	}
	lost := gapText(ship.Gap{Timeline: "tl", From: 10, To: 20, Before: since, Cause: "in no WAL kept and on no target"}, "n1")
	if !strings.Contains(lost, "committed before 2026-12-05T10:00:00Z") || !strings.Contains(lost, "in no WAL kept") || strings.Contains(lost, "damage") {
		t.Errorf("a re-anchoring's gap: %s", lost)
	}
}
