package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/vfs"

	"storekeeper/internal/testsignal"
)

// shipConfig is a registry that keeps the commit log, with memtables small
// enough that a test's writes rotate through many WALs.
func shipConfig(t *testing.T) Config {
	return Config{
		DataDir:   t.TempDir(),
		BackupDir: t.TempDir(),
		Ship:      true,
		Stores:    []string{"orders"},
		PebbleOptions: func(string) *pebble.Options {
			return &pebble.Options{MemTableSize: 256 << 10}
		},
	}
}

// logReader drains a store's commit log the way a shipper does.
type logReader struct {
	cur     LogCursor
	batches []LogBatch
}

func (lr *logReader) read(t *testing.T, s *Store) {
	t.Helper()
	through, err := s.SyncLog(lr.cur.Next)
	if err != nil {
		t.Fatalf("SyncLog: %v", err)
	}
	lr.cur, err = s.ReadLog(context.Background(), lr.cur, through, func(b LogBatch, _ LogCursor) error {
		b.Repr = append([]byte(nil), b.Repr...)
		lr.batches = append(lr.batches, b)
		return nil
	})
	if err != nil {
		t.Fatalf("ReadLog: %v", err)
	}
}

// keys returns the keys the batches set, in order, and checks that their
// sequence numbers follow each other with nothing missing.
func (lr *logReader) keys(t *testing.T) []string {
	t.Helper()
	var out []string
	for i, b := range lr.batches {
		if i > 0 && b.Seq != lr.batches[i-1].Next() {
			t.Fatalf("batch %d starts at %d, the one before ends before %d", i, b.Seq, lr.batches[i-1].Next())
		}
		if b.Stamp.IsZero() {
			t.Fatalf("batch at %d has no commit time", b.Seq)
		}
		r := batchrepr.Read(b.Repr)
		for {
			kind, k, _, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if kind == pebble.InternalKeyKindSet {
				out = append(out, string(k))
			}
		}
	}
	return out
}

func TestReadLogHandsOutEveryCommitInOrder(t *testing.T) {
	r := openTest(t, shipConfig(t))
	s := mustStore(t, r, "orders")
	const writers, each = 4, 400
	var wg sync.WaitGroup
	val := make([]byte, 1000)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Set(fmt.Appendf(nil, "w%d-%05d", w, i), val); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Read while the writers write and Pebble rotates and archives WALs.
	lr := &logReader{}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		default:
		}
		lr.read(t, s)
		if _, err := s.TrimLog(lr.cur); err != nil {
			t.Fatalf("TrimLog: %v", err)
		}
	}
	lr.read(t, s)
	keys := lr.keys(t)
	if len(keys) != writers*each {
		t.Fatalf("the log holds %d sets, want %d", len(keys), writers*each)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Fatalf("%s handed out twice", k)
		}
		seen[k] = true
	}
	// Every WAL before the cursor's goes from archive/ (Pebble archives
	// a WAL some time after its flush), and nothing else Pebble archived
	// is kept.
	testsignal.WaitFor(t, "archive/ trimmed to the cursor", func() bool {
		if _, err := s.TrimLog(lr.cur); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(filepath.Join(s.Dir(), "archive"))
		for _, e := range entries {
			var num uint64
			if _, err := fmt.Sscanf(e.Name(), "%06d.log", &num); err != nil || num < lr.cur.Log {
				return false
			}
		}
		return true
	})
}

// TestReadLogHandsOutOnlySyncedWrites: unsynced writes committed after
// SyncLog reach the WAL file once a 32 KiB block fills, before anything
// syncs them. Shipped then, a power loss could take them from the store
// while a target keeps them; ReadLog bounded by SyncLog's answer leaves
// them for the next SyncLog.
func TestReadLogHandsOutOnlySyncedWrites(t *testing.T) {
	r := openTest(t, shipConfig(t))
	s := mustStore(t, r, "orders")
	lr := &logReader{}
	if err := s.Set([]byte("before"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	lr.read(t, s)
	through, err := s.SyncLog(lr.cur.Next)
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 10<<10)
	for i := range 8 {
		if err := s.Update(func(b *Batch) error {
			b.Sync(false)
			return b.Set(fmt.Appendf(nil, "unsynced-%d", i), val)
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until Pebble wrote full blocks of them out (not synced).
	handedOut := func(limit uint64) int {
		n := 0
		if _, err := s.ReadLog(context.Background(), lr.cur, limit, func(LogBatch, LogCursor) error { n++; return nil }); err != nil {
			t.Fatalf("ReadLog: %v", err)
		}
		return n
	}
	testsignal.WaitFor(t, "unsynced writes in the WAL file", func() bool { return handedOut(math.MaxUint64) > 0 })
	if n := handedOut(through); n != 0 {
		t.Fatalf("ReadLog through %d handed out %d batches committed after SyncLog and not synced", through, n)
	}
	lr.read(t, s)
	if keys := lr.keys(t); len(keys) != 9 || keys[8] != "unsynced-7" {
		t.Fatalf("after the next SyncLog the log holds %q, want before and the 8 unsynced writes", keys)
	}
}

func TestReadLogGoesOnAfterReopen(t *testing.T) {
	cfg := shipConfig(t)
	r := openTest(t, cfg)
	s := mustStore(t, r, "orders")
	for i := range 50 {
		if err := s.Set(fmt.Appendf(nil, "a%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	lr := &logReader{}
	lr.read(t, s)
	tl, _ := s.Timeline()
	// Writes the reader has not read yet, then a restart.
	for i := range 50 {
		if err := s.Set(fmt.Appendf(nil, "b%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, cfg)
	s = mustStore(t, r, "orders")
	if tl2, _ := s.Timeline(); tl2.ID != tl.ID {
		t.Fatalf("a restart started timeline %s; want %s continued", tl2.ID, tl.ID)
	}
	if err := s.Set([]byte("c"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	lr.read(t, s)
	if keys := lr.keys(t); len(keys) != 101 {
		t.Fatalf("read %d sets across the restart, want 101: %v", len(keys), keys)
	}
}

func TestRestoreReplaysTheLogOntoABackup(t *testing.T) {
	r := openTest(t, shipConfig(t))
	s := mustStore(t, r, "orders")
	for i := range 100 {
		if err := s.Set(fmt.Appendf(nil, "k%03d", i), []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	lr := &logReader{}
	lr.read(t, s)
	b, err := s.Backup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tl, _ := s.Timeline()
	if b.Backup.Timeline != tl.ID || b.Backup.LogSeq == 0 || b.Backup.LogAt.IsZero() {
		t.Fatalf("backup's log position: timeline %q seq %d at %v", b.Backup.Timeline, b.Backup.LogSeq, b.Backup.LogAt)
	}
	for i := range 100 {
		if i%2 == 0 {
			err = s.Set(fmt.Appendf(nil, "k%03d", i), []byte("after"))
		} else {
			err = s.Update(func(b *Batch) error {
				return b.DeleteRange(fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "k%03d", i+1))
			})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want, n := checksum(t, s)
	lr.read(t, s)

	res, err := s.RestoreWith(context.Background(), RestoreRequest{
		BackupID: b.Backup.ID,
		Replay: &Replay{
			Branch: Branch{Timeline: tl.ID, At: time.Now(), Replayed: []ReplayStep{{Timeline: tl.ID, From: b.Backup.LogSeq + 1, Until: time.Now()}}},
			Batches: func(ctx context.Context, apply func(LogBatch) error) (ReplayResult, error) {
				var rr ReplayResult
				for _, lb := range lr.batches {
					if lb.Next() <= b.Backup.LogSeq+1 && lb.Count > 0 {
						continue
					}
					if err := apply(lb); err != nil {
						return rr, err
					}
					rr.Through, rr.LastWriteAt = lb.Next()-1, lb.Stamp
				}
				return rr, nil
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, m := checksum(t, s); got != want || m != n {
		t.Fatalf("restored store has %d keys (%s), want %d (%s)", m, got, n, want)
	}
	if res.Log == nil || res.Log.Batches != 100 || res.Log.Timeline == tl.ID {
		t.Fatalf("replay result %+v", res.Log)
	}
	tl2, _ := s.Timeline()
	if tl2.ID != res.Log.Timeline || tl2.Parent == nil || tl2.Parent.Timeline != tl.ID || tl2.Parent.Backup != b.Backup.ID {
		t.Fatalf("timeline after the restore: %+v", tl2)
	}
	if _, err := s.ReadLog(context.Background(), lr.cur, math.MaxUint64, func(LogBatch, LogCursor) error { return nil }); !errors.Is(err, ErrTimelineChanged) {
		t.Fatalf("ReadLog on the old timeline: %v, want ErrTimelineChanged", err)
	}
}

func TestWaitShippedWaitsForMarkShipped(t *testing.T) {
	r := openTest(t, shipConfig(t))
	s := mustStore(t, r, "orders")
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	tl, last := s.LastCommitted()
	waited := make(chan error, 1)
	go func() { waited <- s.WaitShipped(context.Background()) }()
	s.MarkShipped(tl, last-1, time.Time{})
	select {
	case err := <-waited:
		t.Fatalf("WaitShipped returned (%v) before its write was shipped", err)
	default:
	}
	s.MarkShipped(tl, last, time.Time{})
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Set([]byte("k2"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitShipped(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitShipped with a cancelled context: %v", err)
	}
}

// replayEverything restores backup id with every batch of the store's
// log after the backup's position replayed onto it.
func replayEverything(s *Store, id string) (RestoreResult, error) {
	var batches []LogBatch
	if _, err := s.ReadLog(context.Background(), LogCursor{}, math.MaxUint64, func(b LogBatch, _ LogCursor) error {
		b.Repr = append([]byte(nil), b.Repr...)
		batches = append(batches, b)
		return nil
	}); err != nil {
		return RestoreResult{}, err
	}
	bs, err := s.Backups()
	if err != nil {
		return RestoreResult{}, err
	}
	from := bs[0].LogSeq + 1
	tl, _ := s.Timeline()
	return s.RestoreWith(context.Background(), RestoreRequest{BackupID: id, Replay: &Replay{
		Branch: Branch{Timeline: tl.ID, At: time.Now()},
		Batches: func(ctx context.Context, apply func(LogBatch) error) (ReplayResult, error) {
			var rr ReplayResult
			for _, b := range batches {
				if b.Seq < from {
					continue
				}
				if err := apply(b); err != nil {
					return rr, err
				}
			}
			return rr, nil
		},
	}})
}

// A crash while the log is replayed into the staged copy (or just after)
// leaves the live store and its timeline as they were; the restore made
// again replays every batch once.
func TestCrashDuringReplay(t *testing.T) {
	for _, point := range []string{"restore.replaying", "restore.replayed"} {
		t.Run(point, func(t *testing.T) {
			cfg := Config{DataDir: t.TempDir(), BackupDir: t.TempDir(), Stores: []string{"kv"}, Ship: true, NoSync: false, Logger: testLogger(t)}
			r, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := mustStore(t, r, "kv")
			for i := range 100 {
				if err := s.Set(fmt.Appendf(nil, "a%03d", i), []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
			b1 := mustBackup(t, s).Backup.ID
			for i := range 60 {
				if err := s.Set(fmt.Appendf(nil, "b%03d", i), []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
			live, _ := checksum(t, s)
			tl, _ := s.Timeline()
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			crashChild(t, "replay", point, cfg, b1)

			r, err = Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			s = mustStore(t, r, "kv")
			if got, _ := checksum(t, s); got != live {
				t.Fatal("a crash before the swap changed the live store")
			}
			if tl2, _ := s.Timeline(); tl2.ID != tl.ID {
				t.Fatalf("timeline %s after the crash, want %s kept", tl2.ID, tl.ID)
			}
			noLeftovers(t, r, "kv")
			res, err := replayEverything(s, b1)
			if err != nil {
				t.Fatal(err)
			}
			if res.Log == nil || res.Log.Batches != 60 {
				t.Fatalf("replayed %+v, want the 60 writes after the backup, once each", res.Log)
			}
			if got, _ := checksum(t, s); got != live {
				t.Fatal("the restore made again does not hold every write")
			}
		})
	}
}

// Pruning keeps what a restore to a moment within the PITR window needs:
// the backup a restore branched the current timeline (and an earlier
// one) from, though many newer backups follow it (make chaos found a
// restore to a moment after an automatic restore refused: "backup …,
// which the timeline was restored from, is gone"); it lets them go once
// the window has passed them, and the Last/Daily rule alone applies
// without a window.
func TestPruneKeepsWhatTheWindowNeeds(t *testing.T) {
	cfg := shipConfig(t)
	cfg.Retention = Retention{Last: 2, Daily: 1, Window: time.Hour}
	r := openTest(t, cfg)
	s := mustStore(t, r, "orders")
	ctx := context.Background()
	backup := func() BackupInfo {
		t.Helper()
		if err := s.Set([]byte(time.Now().String()), []byte("v")); err != nil {
			t.Fatal(err)
		}
		b, err := s.Backup(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return b.Backup
	}
	b0 := backup()
	if _, err := s.Restore(ctx, b0.ID); err != nil { // a first branch from b0
		t.Fatal(err)
	}
	first, _ := s.Timeline()
	b1 := backup()
	if _, err := s.Restore(ctx, b1.ID); err != nil { // the current branch, from b1
		t.Fatal(err)
	}
	tl, _ := s.Timeline()
	if len(tl.Earlier) != 2 || tl.Earlier[0].ID != first.ID || tl.Earlier[0].Backup != b0.ID {
		t.Fatalf("timeline after two restores: %+v", tl)
	}
	for range 4 {
		backup()
	}
	ids := func() map[string]bool {
		all, err := s.Backups()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, b := range all {
			out[b.ID] = true
		}
		return out
	}
	if got := ids(); !got[b0.ID] || !got[b1.ID] || len(got) != 4 {
		t.Fatalf("backups kept %v; want b0 %s, b1 %s and the newest 2", got, b0.ID, b1.ID)
	}
	// A target is pruned by the same rule.
	all, err := s.Backups()
	if err != nil {
		t.Fatal(err)
	}
	created := map[string]time.Time{"elsewhere": b0.CreatedAt.Add(-time.Minute)}
	for _, b := range all {
		created[b.ID] = b.CreatedAt
	}
	if keep := s.Keep(created, time.Now()); !keep[b0.ID] || !keep[b1.ID] {
		t.Fatalf("a target's copies kept %v", keep)
	}
	// Two hours on, the window holds none of it: the newest two, and the
	// day's newest, are all that stay.
	if keep := s.Keep(created, time.Now().Add(2*time.Hour)); keep[b0.ID] || keep[b1.ID] || len(keep) > 3 {
		t.Fatalf("kept past the window: %v", keep)
	}
}

// HoldWrites: a write made while the oldest unshipped write is older than
// the bound waits until shipping catches up; clearing the bound, or the
// shipper making no progress, lets it go.
func TestHoldWritesWaitsForShipping(t *testing.T) {
	r := openTest(t, shipConfig(t))
	s := mustStore(t, r, "orders")
	s.HoldWrites(time.Nanosecond)
	if err := s.Set([]byte("a"), []byte("v")); err != nil { // nothing unshipped before it: not held
		t.Fatal(err)
	}
	if n := s.HeldWrites(); n != 0 {
		t.Fatalf("%d writes held with nothing unshipped", n)
	}
	held := func(n uint64) chan error {
		done := make(chan error, 1)
		go func() { done <- s.Set([]byte("b"), []byte("v")) }()
		testsignal.WaitFor(t, "the write held", func() bool { return s.HeldWrites() == n })
		select {
		case err := <-done:
			t.Fatalf("the held write returned (%v) before shipping caught up", err)
		default:
		}
		return done
	}

	// Shipping catches up: the held write commits.
	done := held(1)
	tl, last := s.LastCommitted()
	s.MarkShipped(tl, last, time.Time{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The shipper clears the bound (a target failed): it commits.
	done = held(2)
	s.HoldWrites(0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The shipper makes no progress: it commits once that has lasted
	// holdNeedsProgress.
	old := holdNeedsProgress
	holdNeedsProgress = time.Second
	t.Cleanup(func() { holdNeedsProgress = old })
	s.HoldWrites(time.Nanosecond)
	done = held(3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// DecodeBatch checks a whole batch before anything reads it with
// Pebble's reader, which trusts its input: every truncation of a sound
// batch, a length past the end, a kind a commit does not write and a
// wrong count are errors, never a panic or a read past the end.
func TestDecodeBatchRefusesDamagedBatches(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pb := db.NewBatch()
	defer pb.Close()
	_ = pb.Set([]byte("set"), []byte("v"), nil)
	_ = pb.Delete([]byte("del"), nil)
	_ = pb.SingleDelete([]byte("sdel"), nil)
	_ = pb.Merge([]byte("merge"), []byte("m"), nil)
	_ = pb.DeleteRange([]byte("a"), []byte("b"), nil)
	_ = pb.DeleteSized([]byte("dsized"), 7, nil)
	_ = pb.RangeKeySet([]byte("c"), []byte("d"), nil, []byte("rk"), nil)
	_ = pb.RangeKeyUnset([]byte("c"), []byte("d"), nil, nil)
	_ = pb.RangeKeyDelete([]byte("e"), []byte("f"), nil)
	at := time.Unix(1700000000, 123).UTC()
	stamp(pb, at)
	sound := append([]byte(nil), pb.Repr()...)
	b, err := DecodeBatch(sound)
	if err != nil || b.Count != 9 || !b.Stamp.Equal(at) {
		t.Fatalf("sound batch: %+v, %v", b, err)
	}

	damaged := map[string][]byte{}
	stampEntry := 1 + 1 + len(stampPrefix) + 8 // kind, length, key
	for n := 0; n < len(sound); n++ {
		if n == len(sound)-stampEntry {
			continue // the batch without its stamp, which is sound
		}
		damaged[fmt.Sprintf("cut to %d bytes", n)] = sound[:n]
	}
	withEntry := func(entry ...byte) []byte {
		b := append(append([]byte(nil), sound...), entry...)
		binary.LittleEndian.PutUint32(b[8:12], binary.LittleEndian.Uint32(b[8:12])+1)
		return b
	}
	damaged["key length past the end"] = withEntry(byte(pebble.InternalKeyKindSet), 0xff, 0xff, 0xff, 0xff, 0x0f, 'k')
	damaged["value length past the end"] = withEntry(byte(pebble.InternalKeyKindSet), 1, 'k', 9, 'v')
	damaged["an ingestion's entry"] = withEntry(byte(pebble.InternalKeyKindIngestSST), 1, 'k')
	damaged["an excise"] = withEntry(byte(pebble.InternalKeyKindExcise), 1, 'a', 1, 'b')
	damaged["an unknown kind"] = withEntry(0xfe, 1, 'k')
	wrongCount := append([]byte(nil), sound...)
	binary.LittleEndian.PutUint32(wrongCount[8:12], 10)
	damaged["count one too many"] = wrongCount
	for name, repr := range damaged {
		if _, err := DecodeBatch(repr); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// archiveRaceFS holds Pebble's move of the first obsolete WAL into
// archive/ until a reader opens that WAL where it was listed, and makes
// the move then: the moment between ReadLog's listing and its open of a
// WAL that Pebble's archiving can fall into on a busy machine.
type archiveRaceFS struct {
	vfs.FS
	held     testsignal.Signal[string] // the WAL whose move is held
	once     sync.Once
	mu       sync.Mutex
	path     string        // the held WAL's path before its move
	release  chan struct{} // closed to let the move go
	released sync.Once
	moved    chan struct{} // closed once it went
}

func (fs *archiveRaceFS) Rename(oldname, newname string) error {
	hold := false
	if strings.HasSuffix(oldname, ".log") && filepath.Base(filepath.Dir(newname)) == archiveDir {
		fs.once.Do(func() { hold = true })
	}
	if !hold {
		return fs.FS.Rename(oldname, newname)
	}
	fs.mu.Lock()
	fs.path = oldname
	fs.mu.Unlock()
	fs.held.Signal(oldname)
	<-fs.release
	defer close(fs.moved)
	return fs.FS.Rename(oldname, newname)
}

func (fs *archiveRaceFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	fs.mu.Lock()
	held := fs.path != "" && name == fs.path
	fs.mu.Unlock()
	if held {
		fs.letGo()
		<-fs.moved
	}
	return fs.FS.Open(name, opts...)
}

func (fs *archiveRaceFS) letGo() { fs.released.Do(func() { close(fs.release) }) }

// TestReadLogFollowsAWALArchivedWhileReading: a WAL Pebble moves into
// archive/ after ReadLog listed it and before ReadLog opened it is read
// from archive/ in the same call. A ReadLog that stopped there handed out
// nothing, and the shipper's Drain, which reads once, returned with the
// writes before it unshipped (seen as a CI failure of
// ship.TestSegmentsAreCompressed: "the segments hold 0 batches").
func TestReadLogFollowsAWALArchivedWhileReading(t *testing.T) {
	fs := &archiveRaceFS{FS: vfs.Default, release: make(chan struct{}), moved: make(chan struct{})}
	fs.held.Init(t)
	cfg := shipConfig(t)
	cfg.PebbleOptions = func(string) *pebble.Options {
		return &pebble.Options{MemTableSize: 256 << 10, FS: fs}
	}
	r := openTest(t, cfg)
	t.Cleanup(fs.letGo) // before the registry closes: Pebble waits for its move
	s := mustStore(t, r, "orders")
	const writes = 600 // 600 KB: the first 256 KiB memtable is flushed and its WAL obsolete
	val := make([]byte, 1000)
	for i := range writes {
		if err := s.Set(fmt.Appendf(nil, "k%05d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	fs.held.Wait()
	lr := &logReader{}
	lr.read(t, s)
	select {
	case <-fs.moved:
	default:
		t.Fatal("ReadLog did not open the held WAL: the test no longer shows what it is about")
	}
	if keys := lr.keys(t); len(keys) != writes {
		t.Fatalf("one ReadLog handed out %d of %d writes", len(keys), writes)
	}
}
