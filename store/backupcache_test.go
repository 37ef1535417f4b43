package store

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// countingFS counts the files opened for reading.
type countingFS struct {
	vfs.FS
	opens atomic.Int64
}

func (f *countingFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f.opens.Add(1)
	return f.FS.Open(name, opts...)
}

// Listing backups again reads no file of a backup it listed before, and
// still shows what changed since: a verification, a backup marked bad, a
// new backup, a pruned one.
func TestBackupsListedFromCache(t *testing.T) {
	fs := &countingFS{FS: vfs.Default}
	r := openTest(t, Config{Stores: []string{"orders"}, BackupDir: t.TempDir(), BackupFS: fs, Retention: Retention{Last: 3}})
	s := mustStore(t, r, "orders")
	backup := func() string {
		t.Helper()
		churn(t, s, 500, 50)
		res, err := s.Backup(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return res.Backup.ID
	}
	list := func() ([]BackupInfo, int64) {
		t.Helper()
		fs.opens.Store(0)
		bs, err := s.Backups()
		if err != nil {
			t.Fatal(err)
		}
		return bs, fs.opens.Load()
	}
	first, second := backup(), backup()
	bs, n := list()
	if n != 0 || len(bs) != 2 {
		t.Fatalf("listing again opened %d files (%d backups listed), want 0", n, len(bs))
	}
	// A verification is seen, and only that backup is read again (which
	// also shows the reads go through fs).
	before := bs[1].VerifiedAt
	if _, err := s.VerifyBackup(t.Context(), first, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	bs, n = list()
	if !bs[1].VerifiedAt.After(before) || n == 0 || n > 4 {
		t.Fatalf("after verifying %s: verified at %v (was %v), %d files opened", first, bs[1].VerifiedAt, before, n)
	}
	// So is a backup marked bad.
	paths, err := s.backupPaths()
	if err != nil {
		t.Fatal(err)
	}
	s.markBackupBad(paths, second, errors.New("a bad table"))
	if bs, _ = list(); bs[0].ID != second || !bs[0].Bad || !strings.Contains(bs[0].Error, "a bad table") {
		t.Fatalf("after marking %s bad: %+v", second, bs[0])
	}
	// A status file removed by someone else (as by a crash before it was
	// written) is seen too.
	if err := os.Remove(paths.status(first)); err != nil {
		t.Fatal(err)
	}
	if bs, _ = list(); !bs[1].VerifiedAt.IsZero() {
		t.Fatalf("after removing %s's status: verified at %v, want never", first, bs[1].VerifiedAt)
	}
	// New backups are listed, pruned ones (Retention.Last 3) are not.
	third, fourth := backup(), backup()
	bs, _ = list()
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	if want := []string{fourth, third, second}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("listed %v, want %v", ids, want)
	}
}

// BenchmarkBackups: listing a store's seven backups (the default
// retention's, of 30 taken), as every job's end and heartbeat does:
// "listed" through the cache, "read" reading every backup's manifest and
// status as the listing did before it.
func BenchmarkBackups(b *testing.B) {
	r, err := Open(Config{DataDir: b.TempDir(), BackupDir: b.TempDir(), Stores: []string{"s"}, NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	s, _ := r.Store("s")
	for range 30 {
		churn(b, s, 2000, 100)
		if _, err := s.Backup(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	paths, err := s.backupPaths()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("listed", func(b *testing.B) {
		for b.Loop() {
			if bs, err := s.Backups(); err != nil || len(bs) != 7 {
				b.Fatalf("%d backups, %v", len(bs), err)
			}
		}
	})
	b.Run("read", func(b *testing.B) {
		for b.Loop() {
			ids, err := r.backupFS.List(paths.backups())
			if err != nil {
				b.Fatal(err)
			}
			for _, id := range ids {
				if _, err := s.backupInfo(paths, id); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
