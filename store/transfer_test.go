package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A backup read out file by file and imported into another registry is
// published there like a local one and restores; a manifest from a
// hostile or broken source (a path in a file name, another store's
// backup, a bad id or hash) is refused before anything is written, and a
// file whose bytes do not match is refused and leaves nothing listed.
func TestImportBackup(t *testing.T) {
	ctx := context.Background()
	src := openTest(t, Config{DataDir: filepath.Join(t.TempDir(), "data"), BackupDir: filepath.Join(t.TempDir(), "backups"), Stores: []string{"orders"}})
	orders := mustStore(t, src, "orders")
	churn(t, orders, 500, 100)
	flush(t, orders)
	want, n := checksum(t, orders)
	res, err := orders.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Backup.BackupManifest
	read := func(_ context.Context, f BackupFile) (io.ReadCloser, error) {
		return orders.OpenBackupFile(m.ID, f.Name)
	}

	dstDir := t.TempDir()
	dst := openTest(t, Config{DataDir: filepath.Join(dstDir, "data"), BackupDir: filepath.Join(dstDir, "backups"), Stores: []string{"orders"}})
	other := mustStore(t, dst, "orders")

	bad := func(edit func(*BackupManifest)) BackupManifest {
		c := m
		c.Files = append([]BackupFile(nil), m.Files...)
		edit(&c)
		return c
	}
	for name, hostile := range map[string]BackupManifest{
		"a path in a file name": bad(func(c *BackupManifest) { c.Files[0].Name = "../../escape" }),
		"another store's":       bad(func(c *BackupManifest) { c.Store = "users" }),
		"a bad id":              bad(func(c *BackupManifest) { c.ID = "../x" }),
		"a bad hash":            bad(func(c *BackupManifest) { c.Files[0].SHA256 = strings.Repeat("z", 64) }),
		"no files":              bad(func(c *BackupManifest) { c.Files = nil }),
		"the manifest's name":   bad(func(c *BackupManifest) { c.Files[0].Name = backupManifestName }),
	} {
		if _, err := other.ImportBackup(ctx, hostile, read); !errors.Is(err, ErrBadBackup) {
			t.Errorf("%s: %v, want ErrBadBackup", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dstDir, "escape")); err == nil {
		t.Fatal("a hostile manifest wrote outside the backup directory")
	}

	// A source that returns other bytes for one file.
	lying := func(ctx context.Context, f BackupFile) (io.ReadCloser, error) {
		if f.Shared {
			return io.NopCloser(bytes.NewReader(bytes.Repeat([]byte{1}, int(f.Size)))), nil
		}
		return read(ctx, f)
	}
	if _, err := other.ImportBackup(ctx, m, lying); !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("an import with a wrong file: %v, want ErrBadBackup naming the hash", err)
	}
	if bs, _ := other.Backups(); len(bs) != 0 {
		t.Fatalf("a failed import left %d backups listed", len(bs))
	}

	if _, err := other.ImportBackup(ctx, m, read); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ImportBackup(ctx, m, func(context.Context, BackupFile) (io.ReadCloser, error) {
		return nil, fmt.Errorf("an import of a backup already here must not read")
	}); err != nil {
		t.Fatalf("importing again: %v", err)
	}
	if _, err := other.Restore(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if got, gotN := checksum(t, other); got != want || gotN != n {
		t.Fatalf("imported and restored: %d keys, checksum %s; want %d, %s", gotN, got, n, want)
	}
}
