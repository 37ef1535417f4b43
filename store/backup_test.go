package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"storekeeper/internal/testsignal"
)

// backupFixture is a data dir and a backup dir for one test.
type backupFixture struct {
	cfg Config
}

func newBackupFixture(t *testing.T, stores ...string) *backupFixture {
	t.Helper()
	root := t.TempDir()
	return &backupFixture{cfg: Config{
		DataDir:   filepath.Join(root, "data"),
		BackupDir: filepath.Join(root, "backups"),
		Stores:    stores,
		Logger:    testLogger(t),
	}}
}

func (f *backupFixture) open(t *testing.T) *Registry { t.Helper(); return openTest(t, f.cfg) }

func mustBackup(t *testing.T, s *Store) BackupResult {
	t.Helper()
	res, err := s.Backup(t.Context())
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	return res
}

func mustRestore(t *testing.T, s *Store, id string) RestoreResult {
	t.Helper()
	res, err := s.Restore(t.Context(), id)
	if err != nil {
		t.Fatalf("Restore(%q): %v", id, err)
	}
	return res
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	f := newBackupFixture(t, "orders")
	r := f.open(t)
	s := mustStore(t, r, "orders")
	churn(t, s, 10000, 200)
	want, n := checksum(t, s)
	b := mustBackup(t, s)
	if b.Backup.Keys == 0 || b.Backup.Bytes == 0 || b.Backup.NewBytes != b.Backup.Bytes || b.Backup.VerifiedAt.IsZero() {
		t.Fatalf("first backup: %+v", b.Backup)
	}
	list, err := s.Backups()
	if err != nil || len(list) != 1 || list[0].ID != b.Backup.ID {
		t.Fatalf("Backups() = %v, %v", list, err)
	}
	// Later writes are what the restore rolls back.
	if err := s.Set([]byte("after-backup"), []byte("lost")); err != nil {
		t.Fatal(err)
	}
	after, _ := checksum(t, s)
	it, err := s.NewIter(nil, nil) // the restore waits for it
	if err != nil {
		t.Fatal(err)
	}
	type restored struct {
		res RestoreResult
		err error
	}
	done := make(chan restored, 1)
	go func() {
		res, err := s.Restore(t.Context(), "")
		done <- restored{res, err}
	}()
	// The fence takes the store out of service, then waits for the
	// iterator: the restore cannot go on while it is open.
	testsignal.WaitFor(t, "the restore fencing the store", func() bool {
		st, _ := s.State()
		return st == StateRestoring
	})
	select {
	case got := <-done:
		t.Fatalf("the restore ended (%v) with an iterator open", got.err)
	default:
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.err != nil {
		t.Fatalf("Restore: %v", got.err)
	}
	res := got.res
	if res.BackupID != b.Backup.ID || !res.BackupAt.Equal(b.Backup.CreatedAt) {
		t.Fatalf("restore result %+v does not name the backup %s at %v", res, b.Backup.ID, b.Backup.CreatedAt)
	}
	if got, m := checksum(t, s); got != want || m != n {
		t.Fatalf("restored content differs: %d keys, want %d", m, n)
	}
	if _, err := s.Get([]byte("after-backup")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("write after the backup survived the restore: %v", err)
	}
	// The replaced generation is in quarantine, whole.
	if q := s.Quarantined(); len(q) != 1 || q[0] != res.Quarantine {
		t.Fatalf("quarantine = %v, want [%s]", q, res.Quarantine)
	}
	if got := checksumDir(t, res.Quarantine); got != after {
		t.Fatal("quarantined generation is not the replaced store")
	}
	pebbleCheck(t, filepath.Join(f.cfg.BackupDir, "orders", "backups", b.Backup.ID), -1)
	// It still serves, passes Pebble's own check once closed, and reopens.
	if err := s.Set([]byte("x"), []byte("y")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	pebbleCheck(t, s.Dir(), -1)
	r = f.open(t)
	if st, cause := mustStore(t, r, "orders").State(); st != StateOpen {
		t.Fatalf("after reopen: %v (%v)", st, cause)
	}
}

// checksumDir opens a store directory read-only and checksums it.
func checksumDir(t *testing.T, dir string) string {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: pebbleLogger{testLogger(t)}})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer db.Close()
	s := &Store{name: "ro", db: db, reg: &Registry{}}
	sum, _ := checksum(t, s)
	return sum
}

var (
	pebbleToolOnce sync.Once
	pebbleTool     string
	pebbleToolErr  error
)

// pebbleCheck runs Pebble's own `pebble db check` on dir. The tool exits 0
// even when it finds corruption, so the test reads its output: stdout must
// say it checked want points (-1: any number but 0), and stderr may hold only
// Pebble's informational WAL lines.
func pebbleCheck(t *testing.T, dir string, want int) {
	t.Helper()
	pebbleToolOnce.Do(func() {
		bin := filepath.Join(os.TempDir(), "storekeeper-pebble-tool", "v2.1.7")
		pebbleTool = filepath.Join(bin, "pebble")
		if _, err := os.Stat(pebbleTool); err == nil {
			return
		}
		cmd := exec.Command("go", "install", "github.com/cockroachdb/pebble/v2/cmd/pebble@v2.1.7")
		cmd.Env = append(os.Environ(), "GOBIN="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			pebbleToolErr = fmt.Errorf("go install pebble tool: %v\n%s", err, out)
		}
	})
	if pebbleToolErr != nil {
		t.Fatal(pebbleToolErr)
	}
	cmd := exec.Command(pebbleTool, "db", "check", dir)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pebble db check %s: %v\nstdout: %s\nstderr: %s", dir, err, stdout.String(), stderr.String())
	}
	info := regexp.MustCompile(`^(Found \d+ WALs|  - \d+: |\[JOB \d+\] WAL \d+: .* replayed \d+ keys in \d+ batches)`)
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	for sc.Scan() {
		if !info.MatchString(sc.Text()) {
			t.Fatalf("pebble db check %s wrote to stderr: %q\nall of it:\n%s", dir, sc.Text(), stderr.String())
		}
	}
	m := regexp.MustCompile(`checked (\d+) points`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("pebble db check %s: no 'checked N points' line:\n%s", dir, stdout.String())
	}
	// Points are internal entries (tombstones and shadowed versions too),
	// so an exact count is only asked of fully compacted stores.
	if got, _ := strconv.Atoi(m[1]); got == 0 || (want >= 0 && got != want) {
		t.Fatalf("pebble db check %s checked %d points, want %d", dir, got, want)
	}
}

func TestBackupIncremental(t *testing.T) {
	f := newBackupFixture(t, "kv")
	r := f.open(t)
	s := mustStore(t, r, "kv")
	churn(t, s, 20000, 200)
	// Settle the LSM so that no background compaction rewrites tables
	// between the two backups: the change below is then one new table.
	if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	full := mustBackup(t, s)
	// A small change: a few keys, flushed into one new table.
	for i := range 50 {
		if err := s.Set(fmt.Appendf(nil, "new-%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, s)
	inc := mustBackup(t, s)
	sstCopied := 0
	for _, f := range inc.Backup.Files {
		if f.Shared && !slices.ContainsFunc(full.Backup.Files, func(g BackupFile) bool { return g.SHA256 == f.SHA256 }) {
			sstCopied++
		}
	}
	if sstCopied != 1 || inc.Shared != len(full.Backup.Files)-countPrivate(full.Backup.Files) {
		t.Fatalf("incremental backup copied %d new sstables and shared %d, want 1 and all %d of the first backup's",
			sstCopied, inc.Shared, len(full.Backup.Files)-countPrivate(full.Backup.Files))
	}
	// Private files (WAL, MANIFEST, OPTIONS) are copied every time; a
	// recycled WAL file is copied whole, stale tail included.
	if newSST := sstBytes(inc.Backup.Files, full.Backup.Files); newSST*20 > sstBytes(full.Backup.Files, nil) {
		t.Fatalf("incremental copied %d sstable bytes, the full one %d", newSST, sstBytes(full.Backup.Files, nil))
	}
	if inc.Reread != 0 {
		t.Errorf("incremental backup reread %d unchanged tables: the hash cache missed", inc.Reread)
	}
	t.Logf("full: %d files, %d bytes; incremental: %d copied, %d shared, %d new bytes", len(full.Backup.Files), full.Backup.NewBytes, inc.Copied, inc.Shared, inc.Backup.NewBytes)
	// One object per distinct sstable content, linked from both backups.
	objs, _ := os.ReadDir(filepath.Join(f.cfg.BackupDir, "kv", "objects"))
	if want := len(inc.Backup.Files) - countPrivate(inc.Backup.Files); len(objs) != want {
		t.Fatalf("%d objects, want %d", len(objs), want)
	}
	want, n := checksum(t, s)
	mustRestore(t, s, full.Backup.ID)
	if _, m := checksum(t, s); m != n-50 {
		t.Fatalf("restore of the full backup has %d keys, want %d", m, n-50)
	}
	mustRestore(t, s, inc.Backup.ID)
	if got, _ := checksum(t, s); got != want {
		t.Fatal("restore of the incremental backup differs")
	}
	pebbleCheck(t, filepath.Join(f.cfg.BackupDir, "kv", "backups", inc.Backup.ID), -1)
}

// sstBytes sums the sizes of the sstables in files whose content is not in
// prev.
func sstBytes(files, prev []BackupFile) int64 {
	var n int64
	for _, f := range files {
		if f.Shared && !slices.ContainsFunc(prev, func(g BackupFile) bool { return g.SHA256 == f.SHA256 }) {
			n += f.Size
		}
	}
	return n
}

func countPrivate(files []BackupFile) int {
	n := 0
	for _, f := range files {
		if !f.Shared {
			n++
		}
	}
	return n
}

// After a restore the store reuses file numbers from the backup's era with
// other contents: backups must go by content, not names.
func TestBackupsAfterRestoreReuseFileNumbers(t *testing.T) {
	f := newBackupFixture(t, "kv")
	r := f.open(t)
	s := mustStore(t, r, "kv")
	churn(t, s, 5000, 100)
	b1 := mustBackup(t, s)
	churn(t, s, 8000, 120) // new tables, new numbers
	mustRestore(t, s, b1.Backup.ID)
	// Writes after the restore create tables whose numbers the pre-restore
	// store already used for other content.
	for i := range 3 {
		for j := range 2000 {
			if err := s.Set(fmt.Appendf(nil, "post-%d-%05d", i, j), fmt.Appendf(nil, "v%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		flush(t, s)
	}
	want, n := checksum(t, s)
	b2 := mustBackup(t, s)
	churn(t, s, 3000, 50)
	mustRestore(t, s, b2.Backup.ID)
	if got, m := checksum(t, s); got != want || m != n {
		t.Fatalf("restore of the post-restore backup: %d keys, want %d, content equal %v", m, n, got == want)
	}
	for _, b := range []string{b1.Backup.ID, b2.Backup.ID} {
		if _, err := s.VerifyBackup(t.Context(), b, VerifyOptions{Deep: true}); err != nil {
			t.Fatalf("VerifyBackup(%s): %v", b, err)
		}
	}
}

func TestBackupDirInsideDataDirRefused(t *testing.T) {
	root := t.TempDir()
	for _, bd := range []string{filepath.Join(root, "data", "backups"), filepath.Join(root, "data"), root} {
		_, err := Open(Config{DataDir: filepath.Join(root, "data"), BackupDir: bd, Logger: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), "backup dir") {
			t.Errorf("BackupDir %s: Open = %v, want a refusal", bd, err)
		}
	}
}

// Corrupt the live store each way the core tests do, restore the latest
// backup: the content equals the backup's exactly.
func TestCorruptionRoundTrip(t *testing.T) {
	damage := map[string]func(t *testing.T, dir string){
		"flipped byte": func(t *testing.T, dir string) { flipByte(t, largest(t, dir), 512) },
		"truncated":    func(t *testing.T, dir string) { p := largest(t, dir); _ = os.Truncate(p, fileSize(t, p)/2) },
		"deleted":      func(t *testing.T, dir string) { _ = os.Remove(largest(t, dir)) },
		"torn manifest": func(t *testing.T, dir string) {
			m := manifestFile(t, dir)
			_ = os.Truncate(m, fileSize(t, m)/2)
		},
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			f := newBackupFixture(t, "kv")
			r := f.open(t)
			s := mustStore(t, r, "kv")
			churn(t, s, 10000, 200)
			want, n := checksum(t, s)
			mustBackup(t, s)
			churn(t, s, 3000, 100) // writes the restore will roll back
			r.Close()
			hurt(t, filepath.Join(f.cfg.DataDir, "kv"))
			r = f.open(t)
			s = mustStore(t, r, "kv")
			if name == "flipped byte" { // found by verification, not at open
				if _, err := s.Verify(t.Context(), VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Verify = %v", err)
				}
			}
			if st, _ := s.State(); st != StateCorrupt {
				t.Fatalf("damaged store state = %v, want corrupt", st)
			}
			mustRestore(t, s, "")
			if got, m := checksum(t, s); got != want || m != n {
				t.Fatalf("restored: %d keys, want %d; equal content %v", m, n, got == want)
			}
			r.Close() // pebble db check needs the store's lock
			pebbleCheck(t, s.Dir(), -1)
		})
	}
}

func largest(t *testing.T, dir string) string {
	t.Helper()
	files := sstFiles(t, dir)
	return slices.MaxFunc(files, func(a, b string) int { return int(fileSize(t, a) - fileSize(t, b)) })
}

// assertUntouched checks the live store still serves the same content.
func assertUntouched(t *testing.T, s *Store, want string) {
	t.Helper()
	if st, cause := s.State(); st != StateOpen {
		t.Fatalf("live store state = %v (%v), want open", st, cause)
	}
	if got, _ := checksum(t, s); got != want {
		t.Fatal("live store content changed")
	}
	if _, err := os.Stat(s.reg.stagedPath(s.name)); !os.IsNotExist(err) {
		t.Fatal("a staged copy was left behind")
	}
	if _, err := os.Stat(s.reg.journalPath(s.name)); !os.IsNotExist(err) {
		t.Fatal("a restore journal was left behind")
	}
}

func TestRestoreBadInput(t *testing.T) {
	f := newBackupFixture(t, "kv")
	r := f.open(t)
	s := mustStore(t, r, "kv")
	if _, err := s.Restore(t.Context(), ""); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("Restore with no backups = %v, want ErrNoBackup", err)
	}
	churn(t, s, 5000, 100)
	b := mustBackup(t, s).Backup
	if err := s.Set([]byte("live"), []byte("only")); err != nil {
		t.Fatal(err)
	}
	live, _ := checksum(t, s)
	bdir := filepath.Join(f.cfg.BackupDir, "kv", "backups", b.ID)

	for _, id := range []string{"nope", "../../etc", "..", ""} {
		if id == "" {
			continue
		}
		if _, err := s.Restore(t.Context(), id); !errors.Is(err, ErrUnknownBackup) {
			t.Errorf("Restore(%q) = %v, want ErrUnknownBackup", id, err)
		}
	}
	assertUntouched(t, s, live)

	// A copy of the backup under another id, with a malformed manifest.
	bad := copyBackup(t, bdir, "20000101T000000.000Z-bad001")
	if err := os.WriteFile(filepath.Join(bad, backupManifestName), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(t.Context(), filepath.Base(bad)); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("Restore(malformed manifest) = %v, want ErrBadBackup", err)
	}
	if list, _ := s.Backups(); len(list) != 1 {
		t.Fatalf("a backup with a malformed manifest is listed: %v", list)
	}
	assertUntouched(t, s, live)

	// Missing file.
	missing := copyBackup(t, bdir, "20000101T000000.000Z-bad002")
	rewriteManifestID(t, missing)
	if err := os.Remove(largest(t, missing)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(t.Context(), filepath.Base(missing)); !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Restore(missing file) = %v, want ErrBadBackup naming the missing file", err)
	}
	assertUntouched(t, s, live)

	// Hash mismatch: one byte of a private file changed.
	mismatch := copyBackup(t, bdir, "20000101T000000.000Z-bad003")
	rewriteManifestID(t, mismatch)
	flipByte(t, largest(t, mismatch), 100)
	if _, err := s.Restore(t.Context(), filepath.Base(mismatch)); !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("Restore(hash mismatch) = %v, want ErrBadBackup with the hashes", err)
	}
	assertUntouched(t, s, live)
	// The damaged backup is now marked bad and never picked.
	if _, err := s.Restore(t.Context(), filepath.Base(mismatch)); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("second Restore(bad backup) = %v", err)
	}
	if _, err := s.VerifyBackup(t.Context(), b.ID, VerifyOptions{Deep: true}); err != nil {
		t.Fatalf("the good backup does not verify: %v", err)
	}
	// No space for staging.
	r.freeSpace = func(string) (uint64, error) { return 1024, nil }
	if _, err := s.Restore(t.Context(), b.ID); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Restore without space = %v, want ErrNoSpace", err)
	}
	assertUntouched(t, s, live)
}

// copyBackup copies a published backup dir under a new id (files, not
// links, so damaging the copy leaves the original alone).
func copyBackup(t *testing.T, src, id string) string {
	t.Helper()
	dst := filepath.Join(filepath.Dir(src), id)
	if out, err := exec.Command("cp", "-r", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

func rewriteManifestID(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, backupManifestName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b = regexp.MustCompile(`"id": "[^"]+"`).ReplaceAll(b, []byte(`"id": "`+filepath.Base(dir)+`"`))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// VerifyBackup finds a damaged shared object and marks the backup bad;
// the live store is not touched.
func TestVerifyBackupFindsDamage(t *testing.T) {
	f := newBackupFixture(t, "kv")
	r := f.open(t)
	s := mustStore(t, r, "kv")
	churn(t, s, 5000, 100)
	b := mustBackup(t, s).Backup
	live, _ := checksum(t, s)
	objs, _ := filepath.Glob(filepath.Join(f.cfg.BackupDir, "kv", "objects", "*"))
	flipByte(t, objs[0], 300)
	_, err := s.VerifyBackup(t.Context(), b.ID, VerifyOptions{})
	if !errors.Is(err, ErrBadBackup) {
		t.Fatalf("VerifyBackup = %v, want ErrBadBackup", err)
	}
	list, _ := s.Backups()
	if len(list) != 1 || !list[0].Bad || list[0].Error == "" {
		t.Fatalf("backup not marked bad: %+v", list)
	}
	if _, err := s.Restore(t.Context(), ""); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("Restore(latest) with only a bad backup = %v, want ErrNoBackup", err)
	}
	assertUntouched(t, s, live)
}

// Faults in the backup directory: typed errors, nothing listed, no
// leftovers, the live store untouched.
func TestBackupFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
		want  error
	}{
		{"disk full", syscall.ENOSPC, syscall.ENOSPC},
		{"unwritable", syscall.EACCES, os.ErrPermission},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var on atomic.Bool
			inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
				if on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.Contains(op.Path, "objects") {
					return &os.PathError{Op: "write", Path: op.Path, Err: tc.errno}
				}
				return nil
			})
			f := newBackupFixture(t, "kv")
			f.cfg.BackupFS = errorfs.Wrap(vfs.Default, inj)
			r := f.open(t)
			s := mustStore(t, r, "kv")
			churn(t, s, 5000, 100)
			live, _ := checksum(t, s)
			on.Store(true)
			_, err := s.Backup(t.Context())
			on.Store(false)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Backup = %v, want %v", err, tc.want)
			}
			if list, _ := s.Backups(); len(list) != 0 {
				t.Fatalf("a failed backup is listed: %v", list)
			}
			for _, sub := range []string{"staging", "objects"} {
				left, _ := os.ReadDir(filepath.Join(f.cfg.BackupDir, "kv", sub))
				if len(left) != 0 {
					t.Fatalf("%s holds leftovers: %v", sub, left)
				}
			}
			assertUntouched(t, s, live)
			mustBackup(t, s) // and it works once the fault is gone
		})
	}
	t.Run("backup dir is a file", func(t *testing.T) {
		f := newBackupFixture(t, "kv")
		if err := os.MkdirAll(filepath.Dir(f.cfg.BackupDir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.cfg.BackupDir, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(f.cfg)
		if !errors.Is(err, syscall.ENOTDIR) || !strings.Contains(err.Error(), "backup dir") {
			t.Fatalf("Open with a file as backup dir = %v, want ENOTDIR naming the backup dir", err)
		}
	})
}

// Disk full while staging a restore: the live store is untouched.
func TestRestoreStagingENOSPC(t *testing.T) {
	var on atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.Contains(op.Path, ".staged") {
			return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
		}
		return nil
	})
	f := newBackupFixture(t, "kv")
	f.cfg.PebbleOptions = func(string) *pebble.Options { return &pebble.Options{FS: errorfs.Wrap(vfs.Default, inj)} }
	r := f.open(t)
	s := mustStore(t, r, "kv")
	churn(t, s, 5000, 100)
	mustBackup(t, s)
	if err := s.Set([]byte("after"), nil); err != nil {
		t.Fatal(err)
	}
	live, _ := checksum(t, s)
	on.Store(true)
	_, err := s.Restore(t.Context(), "")
	on.Store(false)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Restore = %v, want ENOSPC", err)
	}
	assertUntouched(t, s, live)
}

func TestRetention(t *testing.T) {
	day := func(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }
	var bs []BackupInfo
	for d := 22; d >= 10; d-- {
		for _, h := range []int{18, 6} {
			at := day(d, h)
			bs = append(bs, BackupInfo{BackupManifest: BackupManifest{ID: at.Format("0102-15"), CreatedAt: at}})
		}
	}
	keep := retain(bs, Retention{Last: 3, Daily: 4}, day(22, 20))
	var got []string
	for _, b := range bs {
		if keep[b.ID] {
			got = append(got, b.ID)
		}
	}
	// The newest 3, and the newest of each of the last 4 days (22..19).
	want := []string{"1122-18", "1122-06", "1121-18", "1120-18", "1119-18"}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}

func TestPruneRemovesUnusedObjects(t *testing.T) {
	f := newBackupFixture(t, "kv")
	f.cfg.Retention = Retention{Last: 2, Daily: 1}
	r := f.open(t)
	s := mustStore(t, r, "kv")
	var ids []string
	for i := range 4 {
		churn(t, s, 3000+1000*i, 100)
		if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, mustBackup(t, s).Backup.ID)
	}
	list, _ := s.Backups()
	if len(list) != 2 || list[0].ID != ids[3] || list[1].ID != ids[2] {
		t.Fatalf("after pruning: %v, want the newest two of %v", list, ids)
	}
	used := map[string]bool{}
	for _, b := range list {
		for _, f := range b.Files {
			if f.Shared {
				used[f.SHA256] = true
			}
		}
	}
	objs, _ := os.ReadDir(filepath.Join(f.cfg.BackupDir, "kv", "objects"))
	if len(objs) != len(used) {
		t.Fatalf("%d objects kept, %d used", len(objs), len(used))
	}
	mustRestore(t, s, ids[2])
}
