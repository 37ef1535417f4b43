package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// backedUp is a store "orders" on a machine of its own with n churned
// keys and a backup of them: the backup's manifest and a reader of its
// files, as a target would give them.
func backedUp(t *testing.T, n int) (*Store, BackupManifest, func(context.Context, BackupFile) (io.ReadCloser, error)) {
	t.Helper()
	src := openTest(t, Config{DataDir: filepath.Join(t.TempDir(), "data"), BackupDir: filepath.Join(t.TempDir(), "backups"), Stores: []string{"orders"}})
	orders := mustStore(t, src, "orders")
	churn(t, orders, n, 100)
	flush(t, orders)
	res, err := orders.Backup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := res.Backup.BackupManifest
	return orders, m, func(_ context.Context, f BackupFile) (io.ReadCloser, error) {
		return orders.OpenBackupFile(m.ID, f.Name)
	}
}

// A store made on one machine is adopted by another registry from its
// backup: same content, listed only once made, made once per key, never
// over a store that is there; a backup that does not check out leaves
// nothing behind, and the store survives a restart of the adopter.
func TestAdopt(t *testing.T) {
	ctx := context.Background()
	orders, m, read := backedUp(t, 500)
	want, n := checksum(t, orders)

	dir := t.TempDir()
	cfg := Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"), Stores: []string{"users"}}
	dst := openTest(t, cfg)

	// A file whose bytes differ from the manifest's: refused, nothing left.
	lying := func(ctx context.Context, f BackupFile) (io.ReadCloser, error) {
		rc, err := read(ctx, f)
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		b = append(b, 0) // one byte more than the manifest says
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	if _, _, err := dst.Adopt(ctx, "orders", "job-1", m, lying); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("adopting from a lying source: %v, want ErrBadBackup", err)
	}
	if _, err := dst.Store("orders"); !errors.Is(err, ErrUnknownStore) {
		t.Fatalf("a failed adoption listed the store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "orders")); !os.IsNotExist(err) {
		t.Fatalf("a failed adoption left a directory: %v", err)
	}

	s, got, err := dst.Adopt(ctx, "orders", "job-1", m, read)
	if err != nil {
		t.Fatal(err)
	}
	if got.BackupID != m.ID || got.Replayed {
		t.Fatalf("adopt: %+v", got)
	}
	if sum, k := checksum(t, s); sum != want || k != n {
		t.Fatalf("adopted store has %d keys (sum %s), the original %d (%s)", k, sum, n, want)
	}
	if err := s.Set([]byte("new"), []byte("write")); err != nil {
		t.Fatalf("the adopted store does not take writes: %v", err)
	}
	if bs, _ := s.Backups(); len(bs) != 1 || bs[0].ID != m.ID {
		t.Fatalf("the adopted backup is not among the store's local backups: %+v", bs)
	}

	// The same adoption again (a retried job) changes nothing; another one,
	// or one of a store that was always here, is refused.
	again, replay, err := dst.Adopt(ctx, "orders", "job-1", m, read)
	if err != nil || again != s || !replay.Replayed || replay.BackupID != m.ID {
		t.Fatalf("replayed adoption: %v %+v", err, replay)
	}
	if v, err := s.Get([]byte("new")); err != nil || string(v) != "write" {
		t.Fatalf("a replayed adoption changed the store: %q %v", v, err)
	}
	for _, name := range []string{"orders", "users"} {
		if _, _, err := dst.Adopt(ctx, name, "job-2", m, read); !errors.Is(err, ErrStoreExists) {
			t.Errorf("adopting %s over the store here: %v, want ErrStoreExists", name, err)
		}
	}

	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = openTest(t, cfg)
	if v, err := mustStore(t, dst, "orders").Get([]byte("new")); err != nil || string(v) != "write" {
		t.Fatalf("after a restart: %q %v", v, err)
	}
}

// A restore read straight from another copy of a backup (a target): each
// file is checked as it arrives; a file that does not match is refused,
// named, and the live store is untouched; a good copy restores, once per
// key, and is not kept among the local backups.
func TestRestoreOnceFrom(t *testing.T) {
	ctx := context.Background()
	orders, m, read := backedUp(t, 300)
	want, _ := checksum(t, orders)
	dir := t.TempDir()
	dst := openTest(t, Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"), Stores: []string{"orders"}})
	live := mustStore(t, dst, "orders")
	if err := live.Set([]byte("live"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	lying := func(ctx context.Context, f BackupFile) (io.ReadCloser, error) {
		rc, err := read(ctx, f)
		if err != nil || f.Name != m.Files[len(m.Files)-1].Name {
			return rc, err
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		return io.NopCloser(bytes.NewReader(append(b, 'x'))), nil
	}
	if _, err := live.RestoreOnceFrom(ctx, "job-1", m, lying); !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), m.Files[len(m.Files)-1].Name) {
		t.Fatalf("restore from a lying copy: %v, want ErrBadBackup naming %s", err, m.Files[len(m.Files)-1].Name)
	}
	if v, err := live.Get([]byte("live")); err != nil || string(v) != "before" {
		t.Fatalf("the live store after a refused restore: %q %v", v, err)
	}
	got, err := live.RestoreOnceFrom(ctx, "job-2", m, read)
	if err != nil || got.BackupID != m.ID {
		t.Fatalf("restore: %+v %v", got, err)
	}
	if sum, _ := checksum(t, live); sum != want {
		t.Fatal("the restored store differs from the backup")
	}
	if again, err := live.RestoreOnceFrom(ctx, "job-2", m, lying); err != nil || !again.Replayed {
		t.Fatalf("the same restore again: %+v %v; want it replayed, nothing read", again, err)
	}
	if bs, _ := live.Backups(); len(bs) != 0 {
		t.Fatalf("the restore kept %d local backups; want none", len(bs))
	}
}
