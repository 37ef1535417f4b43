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

// A backup records a fingerprint per sstable and WAL and for the whole;
// an incremental backup takes its unchanged tables' fingerprints from the
// cache (no table reread), and a cache written before fingerprints still
// gives a fingerprinted backup. A drill of the backup recomputes the same
// fingerprint, passes CheckLevels and leaves nothing behind.
func TestBackupFingerprintAndDrill(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	reg := openTest(t, Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"), Stores: []string{"orders"}})
	orders := mustStore(t, reg, "orders")
	churn(t, orders, 2000, 64)
	// Unflushed writes live in the WAL the checkpoint copies.
	for i := range 50 {
		if err := orders.Set([]byte{'w', byte(i)}, []byte("in the wal")); err != nil {
			t.Fatal(err)
		}
	}
	res, err := orders.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Backup.BackupManifest
	if _, err := parseFingerprint(m.Fingerprint); err != nil {
		t.Fatalf("backup fingerprint: %v", err)
	}
	var tables, wals int
	for _, f := range m.Files {
		switch {
		case strings.HasSuffix(f.Name, ".sst"):
			tables++
		case strings.HasSuffix(f.Name, ".log"):
			wals++
		default:
			if f.Fingerprint != "" {
				t.Errorf("%s has a fingerprint", f.Name)
			}
			continue
		}
		fp, err := parseFingerprint(f.Fingerprint)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if fp.n == 0 {
			t.Errorf("%s: fingerprint of no entries", f.Name)
		}
	}
	if tables < 2 || wals < 1 {
		t.Fatalf("backup has %d tables and %d WALs; the test wants both fingerprinted", tables, wals)
	}

	read := func(id string) func(context.Context, BackupFile) (io.ReadCloser, error) {
		return func(_ context.Context, f BackupFile) (io.ReadCloser, error) { return orders.OpenBackupFile(id, f.Name) }
	}
	rep, err := orders.Drill(ctx, m, read(m.ID))
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	if !rep.FingerprintChecked || rep.Fingerprint != m.Fingerprint || rep.Points == 0 {
		t.Fatalf("drill report %+v; manifest fingerprint %s", rep, m.Fingerprint)
	}
	if left, _ := os.ReadDir(filepath.Join(reg.meta, "work")); len(left) != 0 {
		t.Fatalf("the drill left %d entries in the work area", len(left))
	}

	// Incremental: unchanged tables come from the cache with their
	// fingerprints.
	if err := orders.Set([]byte("one more"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	flush(t, orders)
	res2, err := orders.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Reread != 0 || res2.Shared == 0 {
		t.Fatalf("incremental backup: %d shared, %d reread", res2.Shared, res2.Reread)
	}
	assertFingerprinted(t, res2.Backup.BackupManifest)
	if _, err := orders.Drill(ctx, res2.Backup.BackupManifest, read(res2.Backup.ID)); err != nil {
		t.Fatalf("drill of the incremental backup: %v", err)
	}

	// A hash cache from before fingerprints: hashes only.
	paths, _ := orders.backupPaths()
	cache := loadHashCache(reg.backupFS, paths.hashCache())
	for k, v := range cache {
		sum, _, _ := strings.Cut(v, " ")
		cache[k] = sum
	}
	if err := saveHashCache(reg.backupFS, paths.hashCache(), cache); err != nil {
		t.Fatal(err)
	}
	if err := orders.Set([]byte("and another"), []byte("y")); err != nil {
		t.Fatal(err)
	}
	flush(t, orders)
	res3, err := orders.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertFingerprinted(t, res3.Backup.BackupManifest)
	if res3.Backup.Fingerprint == m.Fingerprint {
		t.Fatal("different content, same fingerprint")
	}
}

func assertFingerprinted(t *testing.T, m BackupManifest) {
	t.Helper()
	for _, f := range m.Files {
		if (strings.HasSuffix(f.Name, ".sst") || strings.HasSuffix(f.Name, ".log")) && f.Fingerprint == "" {
			t.Fatalf("backup %s: %s has no fingerprint", m.ID, f.Name)
		}
	}
	if got, err := combineFingerprints(m.Files); err != nil || got != m.Fingerprint {
		t.Fatalf("backup %s: fingerprint %s, its files combine to %s (%v)", m.ID, m.Fingerprint, got, err)
	}
}

// A drill refuses, naming the file, a backup whose bytes differ from the
// manifest (a corrupted object), whose manifest's fingerprint does not
// match what its tables read back as, or that Pebble cannot check; and it
// never touches the live store.
func TestDrillRefusesBadBackups(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	reg := openTest(t, Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"), Stores: []string{"orders"}})
	orders := mustStore(t, reg, "orders")
	churn(t, orders, 1000, 64)
	want, _ := checksum(t, orders)
	res, err := orders.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Backup.BackupManifest
	read := func(_ context.Context, f BackupFile) (io.ReadCloser, error) {
		return orders.OpenBackupFile(m.ID, f.Name)
	}
	var sst BackupFile
	for _, f := range m.Files {
		if f.Shared {
			sst = f
			break
		}
	}

	corrupted := func(ctx context.Context, f BackupFile) (io.ReadCloser, error) {
		if f.Name != sst.Name {
			return read(ctx, f)
		}
		rc, err := read(ctx, f)
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		b[len(b)/2] ^= 0xff
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	if _, err := orders.Drill(ctx, m, corrupted); !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), sst.Name) {
		t.Fatalf("drill of a corrupted object: %v, want ErrBadBackup naming %s", err, sst.Name)
	}

	lying := m
	lying.Files = append([]BackupFile(nil), m.Files...)
	for i := range lying.Files {
		if lying.Files[i].Name == sst.Name {
			fp, _ := parseFingerprint(lying.Files[i].Fingerprint)
			fp.sum++
			lying.Files[i].Fingerprint = fp.String()
		}
	}
	if _, err := orders.Drill(ctx, lying, read); !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), "fingerprint") ||
		!strings.Contains(err.Error(), sst.Name) {
		t.Fatalf("drill with a wrong table fingerprint: %v, want ErrBadBackup naming the fingerprint and %s", err, sst.Name)
	}
	whole := m
	whole.Fingerprint = fingerprint{n: 1}.String()
	if _, err := orders.Drill(ctx, whole, read); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("drill with a wrong backup fingerprint: %v, want ErrBadBackup", err)
	}

	// A backup from before fingerprints is drilled without them.
	old := m
	old.Fingerprint = ""
	old.Files = append([]BackupFile(nil), m.Files...)
	for i := range old.Files {
		old.Files[i].Fingerprint = ""
	}
	rep, err := orders.Drill(ctx, old, read)
	if err != nil || rep.FingerprintChecked {
		t.Fatalf("drill of a backup without fingerprints: %+v, %v", rep, err)
	}
	if got, _ := checksum(t, orders); got != want {
		t.Fatal("a drill changed the live store")
	}
}
