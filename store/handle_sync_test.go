package store

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// walSyncFS is the real filesystem, counting the syncs of WAL files (*.log):
// the one observable difference between a synced and an unsynced commit.
type walSyncFS struct {
	vfs.FS
	syncs *atomic.Int64
}

func (fs walSyncFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return walSyncFile{File: f, syncs: fs.syncs}, nil
}

func (fs walSyncFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, cat)
	return fs.wrap(name, f, err)
}

func (fs walSyncFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, cat)
	return fs.wrap(newname, f, err)
}

func (fs walSyncFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, cat, opts...)
	return fs.wrap(name, f, err)
}

// walSyncFile counts every call that can make a WAL durable.
type walSyncFile struct {
	vfs.File
	syncs *atomic.Int64
}

func (f walSyncFile) Sync() error     { f.syncs.Add(1); return f.File.Sync() }
func (f walSyncFile) SyncData() error { f.syncs.Add(1); return f.File.SyncData() }
func (f walSyncFile) SyncTo(length int64) (bool, error) {
	f.syncs.Add(1)
	return f.File.SyncTo(length)
}

// TestBatchSyncReachesPebble: Batch.Sync decides, per commit, whether the
// WAL is synced, over the registry's default either way. Counted on the
// WAL file itself, so a Sync that Update ignored fails it.
func TestBatchSyncReachesPebble(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSync=%v", noSync), func(t *testing.T) {
			var syncs atomic.Int64
			r, err := Open(Config{DataDir: t.TempDir(), Stores: []string{"kv"}, NoSync: noSync, Logger: testLogger(t),
				PebbleOptions: func(string) *pebble.Options {
					return &pebble.Options{FS: walSyncFS{FS: vfs.Default, syncs: &syncs}}
				}})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { _ = r.Close() })
			s := mustStore(t, r, "kv")
			n := 0
			// commit commits one batch, calling Sync(choice) unless choice
			// is nil, and returns how many WAL syncs it caused.
			commit := func(choice *bool) int64 {
				t.Helper()
				before := syncs.Load()
				err := s.Update(func(b *Batch) error {
					if choice != nil {
						b.Sync(*choice)
					}
					n++
					return b.Set(fmt.Appendf(nil, "k%03d", n), []byte("v"))
				})
				if err != nil {
					t.Fatalf("Update: %v", err)
				}
				return syncs.Load() - before
			}
			yes, no := true, false
			for range 5 {
				if got := commit(&yes); got == 0 {
					t.Fatalf("Sync(true): the commit did not sync the WAL")
				}
				if got := commit(&no); got != 0 {
					t.Fatalf("Sync(false): the commit synced the WAL %d times", got)
				}
				got := commit(nil)
				if noSync && got != 0 {
					t.Fatalf("default under NoSync: the commit synced the WAL %d times", got)
				}
				if !noSync && got == 0 {
					t.Fatalf("default: the commit did not sync the WAL")
				}
			}
			for i := 1; i <= n; i++ {
				if _, err := s.Get(fmt.Appendf(nil, "k%03d", i)); err != nil {
					t.Fatalf("key %d: %v", i, err)
				}
			}
		})
	}
}
