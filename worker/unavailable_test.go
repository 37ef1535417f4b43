package worker

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/jonboulle/clockwork"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/store"
)

// A store that does not open for a disk error (EIO on its tables) is
// unavailable, never corrupt: the worker starts, publishes the state with
// its error, fails jobs on it with that error, never reports an incident
// and never restores it; once the disk is fixed the store opens by itself
// and serves jobs again.
func TestUnavailableStoreIsNeverRestored(t *testing.T) {
	root := t.TempDir()
	dataDir, backupDir := filepath.Join(root, "data"), filepath.Join(root, "backups")
	// A store with data and a verified backup: everything an automatic
	// restore would need, so only the rule can keep it from happening.
	{
		b := setupWith(t, options{store: func(c *store.Config) { c.DataDir, c.BackupDir = dataDir, backupDir }}, nil, "orders")
		s, _ := b.reg.Store("orders")
		for i := range 2000 {
			if err := s.Set([]byte(strings.Repeat("k", 8)+string(rune('a'+i%26))+time.Duration(i).String()), make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify} {
			rec := b.enqueue(t, k, "orders", jobs.Params{Force: k == jobs.KindCompact})
			b.waitState(t, rec.ID, jobs.StateSucceeded)
		}
		b.w.Shutdown()
		if err := b.reg.Close(); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dataDir, "orders"))
	var tables int
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sst") {
			tables++
		}
	}
	if tables == 0 {
		t.Fatal("no tables to fail")
	}

	eio := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasSuffix(op.Path, ".sst") && op.Kind == errorfs.OpOpen {
			return &os.PathError{Op: "open", Path: op.Path, Err: syscall.EIO}
		}
		return nil
	})}
	eio.On()
	clock := clockwork.NewFakeClock()
	efs := errorfs.Wrap(vfs.Default, eio)
	b := setupWith(t, options{store: func(c *store.Config) {
		c.DataDir, c.BackupDir, c.Clock = dataDir, backupDir, clock
		c.PebbleOptions = func(string) *pebble.Options { return &pebble.Options{FS: efs} }
	}}, nil, "orders")
	s, _ := b.reg.Store("orders")
	if st, cause := s.State(); st != store.StateUnavailable || !errors.Is(cause, syscall.EIO) {
		t.Fatalf("store %s (%v); want unavailable with EIO", st, cause)
	}
	// Published as unavailable, with its error.
	b.waitStats(t, "orders", func(st jobs.StoreStats) bool {
		return st.State == "unavailable" && strings.Contains(st.Error, "input/output error")
	})
	// A job on it fails with the disk's error, is not taken for
	// corruption, and is retried.
	rec := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	failed := b.waitRecord(t, rec.ID, func(r jobs.Record) bool { return len(r.Errors) > 0 })
	if !strings.Contains(failed.Errors[0].Error, "unavailable") {
		t.Fatalf("job error %q", failed.Errors[0].Error)
	}

	// The disk is fixed; the registry's next retry opens the store. The
	// clock has not moved, so the retry waits on its first timer.
	eio.Off()
	opened := make(chan struct{}, 1)
	defer b.reg.OnStateChange(func(name string, st store.State, _ error) {
		if name == "orders" && st == store.StateOpen {
			opened <- struct{}{}
		}
	})()
	if err := clock.BlockUntilContext(testCtx(t), 1); err != nil {
		t.Fatalf("the registry's retry is not waiting: %v", err)
	}
	clock.Advance(time.Minute)
	select {
	case <-opened:
	case <-time.After(testsignal.Timeout):
		st, cause := s.State()
		t.Fatalf("store still %s (%v) after the fault cleared and the retry ran", st, cause)
	}
	b.waitStats(t, "orders", func(st jobs.StoreStats) bool { return st.State == "open" })
	after := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	b.waitState(t, after.ID, jobs.StateSucceeded)

	// Only now, with the store back and a job run after it: no incident,
	// no store.corrupt, no restore, ever.
	if n := len(b.eventsOfType(t, jobs.EventStoreCorrupt)); n != 0 {
		t.Fatalf("%d store.corrupt events for a disk error", n)
	}
	if n, _ := b.rdb.Exists(t.Context(), keyspace.IncidentKey("orders")).Result(); n != 0 {
		t.Fatal("an incident was recorded for a disk error")
	}
	for _, e := range b.eventsOfType(t, jobs.EventJobEnqueued) {
		if e.Kind == jobs.KindRestore {
			t.Fatalf("a restore was enqueued for a disk error: %+v", e)
		}
	}
}

// waitStats waits until the store's published stats satisfy ok.
func (b *bundle) waitStats(t *testing.T, name string, ok func(jobs.StoreStats) bool) {
	t.Helper()
	var last string
	if !testsignal.Poll(testsignal.Timeout, func() bool {
		raw, err := b.rdb.Get(t.Context(), keyspace.StatsKey(name)).Result()
		if err != nil {
			return false
		}
		last = raw
		var p jobs.StoreStatus
		return json.Unmarshal([]byte(raw), &p) == nil && ok(p.Stats)
	}) {
		t.Fatalf("published stats of %s: %s", name, last)
	}
}
