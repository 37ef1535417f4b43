package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// The crash tests run a backup or a restore in a child process (this test
// binary, re-executed) that kills itself with SIGKILL at one named crash
// point, then open the registry again in the parent, which runs startup
// recovery, and check what is left.

var (
	backupCrashPoints = []string{
		"backup.checkpointed", "backup.copied", "backup.validated", "backup.manifest-written",
		"backup.renamed", "backup.published", "backup.pruned",
	}
	restoreCrashPoints = []string{
		"restore.fenced", "restore.journaled", "restore.staged", "restore.verified",
		"restore.swap-journaled", "restore.swapped", "restore.quarantined", "restore.reopened",
	}
)

const crashEnv = "STOREKEEPER_TEST_CRASH"

// TestMain runs the crash child or the disk-full child when the crash
// and disk-full tests re-execute this binary, and the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv(crashEnv); spec != "" {
		crashChildMain(spec) // never returns
	}
	if spec := os.Getenv(diskFullEnv); spec != "" {
		diskFullChildMain(spec) // never returns
	}
	// No goroutine may outlive the tests: every one our code starts has
	// an owner that ends it (Pebble's disk-health watcher included: the
	// registry owns it).
	goleak.VerifyTestMain(m)
}

// crashChildMain runs one backup or restore that kills itself at a crash
// point. Reaching the end is a failure: the point was never reached.
func crashChildMain(spec string) {
	var op, point, data, backups, id string
	if n, _ := fmt.Sscan(spec, &op, &point, &data, &backups, &id); n < 4 {
		fmt.Fprintf(os.Stderr, "bad %s %q\n", crashEnv, spec)
		os.Exit(3)
	}
	crashHook = func(p string) {
		if p == point {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never return from the crash point
		}
	}
	r, err := Open(Config{DataDir: data, BackupDir: backups, Logger: slog.New(slog.DiscardHandler), Ship: op == "replay"})
	if err == nil {
		var s *Store
		if s, err = r.Store("kv"); err == nil {
			switch op {
			case "backup":
				_, err = s.Backup(context.Background())
			case "restore":
				_, err = s.Restore(context.Background(), id)
			case "replay":
				_, err = replayEverything(s, id)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "%s finished (%v) without reaching crash point %s\n", op, err, point)
	os.Exit(3)
}

// crashChild runs op in a child that must die of SIGKILL at point.
func crashChild(t *testing.T, op, point string, cfg Config, backupID string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s %s", crashEnv, op, point, cfg.DataDir, cfg.BackupDir, backupID))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child %s at %s: %v\n%s", op, point, err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child %s did not die at %s: %v\n%s", op, point, err, out)
	}
}

// crashFixture: a store with content A in backup b1, then content B live.
type crashFixture struct {
	*backupFixture
	a, b string // checksums
	b1   string
}

func newCrashFixture(t *testing.T) *crashFixture {
	t.Helper()
	f := &crashFixture{backupFixture: newBackupFixture(t, "kv")}
	r := f.open(t)
	s := mustStore(t, r, "kv")
	churn(t, s, 4000, 100)
	f.a, _ = checksum(t, s)
	f.b1 = mustBackup(t, s).Backup.ID
	churn(t, s, 2500, 150)
	f.b, _ = checksum(t, s)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// noLeftovers checks that recovery removed every work area.
func noLeftovers(t *testing.T, r *Registry, name string) {
	t.Helper()
	for _, p := range []string{r.stagedPath(name), r.journalPath(name), filepath.Join(r.meta, "work")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("left behind after recovery: %s", p)
		}
	}
	for _, sub := range []string{"staging", "trash"} {
		if left, _ := os.ReadDir(filepath.Join(r.cfg.BackupDir, name, sub)); len(left) > 0 {
			t.Errorf("left behind in %s: %v", sub, left)
		}
	}
	objs, _ := filepath.Glob(filepath.Join(r.cfg.BackupDir, name, "objects", "tmp-*"))
	if len(objs) > 0 {
		t.Errorf("temporary objects left: %v", objs)
	}
}

func TestCrashDuringRestore(t *testing.T) {
	for i, point := range restoreCrashPoints {
		t.Run(point, func(t *testing.T) {
			f := newCrashFixture(t)
			crashChild(t, "restore", point, f.cfg, f.b1)

			r := f.open(t) // recovery
			s := mustStore(t, r, "kv")
			if st, cause := s.State(); st != StateOpen {
				t.Fatalf("after recovery: state %v (%v)", st, cause)
			}
			got, _ := checksum(t, s)
			// From the journal's swap phase on, recovery finishes the
			// restore (the staged copy is verified); before it, it rolls back.
			swapped := i >= slices.Index(restoreCrashPoints, "restore.swap-journaled")
			switch {
			case got != f.a && got != f.b:
				t.Fatal("store is neither the old nor the new content")
			case swapped && got != f.a:
				t.Fatal("crash after the swap: recovery did not finish the restore")
			case !swapped && got != f.b:
				t.Fatal("crash before the swap: recovery did not roll back")
			}
			if swapped {
				q := s.Quarantined()
				if len(q) != 1 || checksumDir(t, q[0]) != f.b {
					t.Fatalf("quarantine %v does not hold the replaced generation", q)
				}
			}
			noLeftovers(t, r, "kv")
			if list, _ := s.Backups(); len(list) != 1 || list[0].ID != f.b1 {
				t.Fatalf("backups after a restore crash: %v", list)
			}
			// A second restore succeeds.
			mustRestore(t, s, f.b1)
			if got, _ := checksum(t, s); got != f.a {
				t.Fatal("second restore: wrong content")
			}
		})
	}
}

func TestCrashDuringBackup(t *testing.T) {
	for i, point := range backupCrashPoints {
		t.Run(point, func(t *testing.T) {
			f := newCrashFixture(t)
			crashChild(t, "backup", point, f.cfg, "")

			r := f.open(t)
			s := mustStore(t, r, "kv")
			if got, _ := checksum(t, s); got != f.b {
				t.Fatal("a backup crash changed the live store")
			}
			noLeftovers(t, r, "kv")
			list, err := s.Backups()
			if err != nil {
				t.Fatal(err)
			}
			published := i >= slices.Index(backupCrashPoints, "backup.renamed")
			if want := map[bool]int{false: 1, true: 2}[published]; len(list) != want {
				t.Fatalf("%d backups listed, want %d: %v", len(list), want, list)
			}
			for _, b := range list {
				if _, err := s.VerifyBackup(t.Context(), b.ID, VerifyOptions{Deep: true}); err != nil {
					t.Fatalf("listed backup %s does not verify: %v", b.ID, err)
				}
			}
			// The newest backup restores to the content it was taken of.
			mustRestore(t, s, list[0].ID)
			want := map[bool]string{false: f.a, true: f.b}[published]
			if got, _ := checksum(t, s); got != want {
				t.Fatal("restore of the newest listed backup: wrong content")
			}
			mustBackup(t, s)
		})
	}
}
