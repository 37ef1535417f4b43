package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// corruptFixture is a store with data in several sstables, closed, plus a
// hook that records corruption reports.
type corruptFixture struct {
	dir     string
	reports chan string
}

func newCorruptFixture(t *testing.T) *corruptFixture {
	t.Helper()
	f := &corruptFixture{dir: t.TempDir(), reports: make(chan string, 16)}
	r := f.open(t)
	s := mustStore(t, r, "victim")
	churn(t, s, 20000, 200)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *corruptFixture) open(t *testing.T) *Registry {
	t.Helper()
	return openTest(t, Config{
		DataDir: f.dir,
		Stores:  []string{"victim"},
		OnCorrupt: func(name string, err error) {
			f.reports <- name + ": " + err.Error()
		},
	})
}

func (f *corruptFixture) storeDir() string { return filepath.Join(f.dir, "victim") }

// largestSST returns the biggest sstable, the likeliest to hold data blocks.
func (f *corruptFixture) largestSST(t *testing.T) string {
	t.Helper()
	files := sstFiles(t, f.storeDir())
	if len(files) == 0 {
		t.Fatal("no sstables")
	}
	return slices.MaxFunc(files, func(a, b string) int { return int(fileSize(t, a) - fileSize(t, b)) })
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func (f *corruptFixture) wantReport(t *testing.T, substr string) {
	t.Helper()
	select {
	case msg := <-f.reports:
		if !strings.Contains(msg, substr) {
			t.Fatalf("corruption report %q does not mention %q", msg, substr)
		}
	default:
		t.Fatal("OnCorrupt was not called")
	}
}

func TestVerifyFindsFlippedByte(t *testing.T) {
	f := newCorruptFixture(t)
	victim := f.largestSST(t)
	flipByte(t, victim, 512)
	r := f.open(t)
	s := mustStore(t, r, "victim")
	_, err := s.Verify(t.Context(), VerifyOptions{})
	var cerr *CorruptionError
	if !errors.As(err, &cerr) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify = %v, want a CorruptionError", err)
	}
	if cerr.File != victim {
		t.Fatalf("corruption names %q, want %q", cerr.File, victim)
	}
	if st, _ := s.State(); st != StateCorrupt {
		t.Fatalf("state = %v, want corrupt", st)
	}
	f.wantReport(t, filepath.Base(victim))
}

// Reading a damaged block raises Pebble's DataCorruption event: the store is
// marked corrupt and the hook runs, and the process does not exit (Pebble's
// default listener would call Fatalf).
func TestDataCorruptionEventMarksStore(t *testing.T) {
	f := newCorruptFixture(t)
	flipByte(t, f.largestSST(t), 512)
	r := f.open(t)
	s := mustStore(t, r, "victim")
	var readErr error
	_ = s.Scan(t.Context(), nil, nil, func(_, _ []byte) error { return nil })
	if it, err := s.NewIter(nil, nil); err == nil {
		for ok := it.First(); ok; ok = it.Next() {
		}
		readErr = it.Error()
		it.Close()
	}
	if readErr == nil {
		t.Fatal("reading a damaged table returned no error")
	}
	if st, _ := s.State(); st != StateCorrupt {
		t.Fatalf("state = %v, want corrupt (read error: %v)", st, readErr)
	}
	f.wantReport(t, "victim")
}

// A table the MANIFEST lists that is missing or has another size, and a
// MANIFEST the marker names that is missing, are damage: storekeeper's own
// checks find them before Pebble's open (which reports them untyped).
func TestOpenDamagedTableMarksCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, f *corruptFixture)
		cause  string // in the cause: which check found it
	}{
		{"truncated", func(t *testing.T, f *corruptFixture) {
			p := f.largestSST(t)
			if err := os.Truncate(p, fileSize(t, p)/2); err != nil {
				t.Fatal(err)
			}
		}, "the MANIFEST records"},
		{"grown", func(t *testing.T, f *corruptFixture) {
			fh, err := os.OpenFile(f.largestSST(t), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			if _, err := fh.Write(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		}, "the MANIFEST records"},
		{"deleted", func(t *testing.T, f *corruptFixture) {
			if err := os.Remove(f.largestSST(t)); err != nil {
				t.Fatal(err)
			}
		}, "is missing"},
		{"MANIFEST deleted", func(t *testing.T, f *corruptFixture) {
			if err := os.Remove(manifestFile(t, f.storeDir())); err != nil {
				t.Fatal(err)
			}
		}, "the MANIFEST the marker names is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCorruptFixture(t)
			tc.damage(t, f)
			r := f.open(t) // the registry opens; the store is listed as corrupt
			s := mustStore(t, r, "victim")
			st, cause := s.State()
			if st != StateCorrupt || !errors.Is(cause, ErrCorrupt) || !strings.Contains(cause.Error(), tc.cause) {
				t.Fatalf("state = %v (%v), want corrupt with %q", st, cause, tc.cause)
			}
			if _, err := s.Get([]byte("key-00000001")); !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Get on unopened corrupt store = %v", err)
			}
			if stats := s.Stats(); stats.State != StateCorrupt || stats.Error == "" {
				t.Fatalf("stats = %+v, want corrupt with an error", stats)
			}
			if _, err := s.Verify(t.Context(), VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify on unopened corrupt store = %v", err)
			}
			f.wantReport(t, "victim")
		})
	}
}

// A MANIFEST that loses its tail opens silently in Pebble, rolled back, and
// a read-write open would then delete the sstables the lost tail named. The
// guard must catch it before that open.
func TestTornManifestIsCorruptionAndKeepsFiles(t *testing.T) {
	dir := t.TempDir()
	reports := make(chan string, 4)
	// Flushes only, so every table the lost tail drops is still on disk and
	// the rolled-back version opens cleanly: the dangerous case.
	cfg := Config{
		DataDir: dir,
		Stores:  []string{"victim"},
		PebbleOptions: func(string) *pebble.Options {
			return &pebble.Options{DisableAutomaticCompactions: true}
		},
		OnCorrupt: func(name string, err error) { reports <- err.Error() },
	}
	r := openTest(t, cfg)
	s := mustStore(t, r, "victim")
	for i := range 5 {
		err := s.Update(func(b *Batch) error {
			for j := range 2000 {
				if err := b.Set([]byte(fmt.Sprintf("k%d-%05d", i, j)), make([]byte, 100)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		flush(t, s)
	}
	r.Close()
	storeDir := filepath.Join(dir, "victim")
	files := sstFiles(t, storeDir)
	manifest := manifestFile(t, storeDir)
	full := fileSize(t, manifest)

	// Cut the tail until a plain read-only open silently sees fewer tables:
	// this is the Pebble behaviour the guard exists for.
	silent := false
	for cut := full - 16; cut > full/4 && !silent; cut -= 16 {
		if err := os.Truncate(manifest, cut); err != nil {
			t.Fatal(err)
		}
		db, err := pebble.Open(storeDir, &pebble.Options{ReadOnly: true, Logger: pebbleLogger{testLogger(t)}})
		if err != nil {
			continue
		}
		view, _ := liveTables(db)
		db.Close()
		silent = len(view) > 0 && len(view) < len(files)
	}
	if !silent {
		t.Fatal("no cut of the MANIFEST opened silently with fewer tables; Pebble changed")
	}

	r = openTest(t, cfg)
	s = mustStore(t, r, "victim")
	st, cause := s.State()
	if st != StateCorrupt || !strings.Contains(cause.Error(), "MANIFEST rolled back") {
		t.Fatalf("state = %v (%v), want corrupt by rolled back MANIFEST", st, cause)
	}
	if got := sstFiles(t, storeDir); !slices.Equal(got, files) {
		t.Fatalf("sstables deleted: had %d, now %d", len(files), len(got))
	}
	select {
	case msg := <-reports:
		if !strings.Contains(msg, "MANIFEST") {
			t.Fatalf("report %q", msg)
		}
	default:
		t.Fatal("OnCorrupt was not called")
	}
	// Reopening again still refuses, and still deletes nothing.
	r.Close()
	r = openTest(t, cfg)
	if st, _ := mustStore(t, r, "victim").State(); st != StateCorrupt {
		t.Fatalf("second open: state = %v", st)
	}
	if got := sstFiles(t, storeDir); !slices.Equal(got, files) {
		t.Fatal("sstables deleted on second open")
	}
}

// Reopening a healthy store after flushes and compactions is not mistaken
// for a rollback.
func TestGuardAcceptsHealthyReopens(t *testing.T) {
	dir := t.TempDir()
	for i := range 4 {
		r := openTest(t, Config{DataDir: dir, Stores: []string{"ok"}, Rule: smallRule})
		s := mustStore(t, r, "ok")
		if st, cause := s.State(); st != StateOpen {
			t.Fatalf("reopen %d: state %v (%v)", i, st, cause)
		}
		churn(t, s, 5000, 100)
		if i%2 == 1 {
			if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
	}
}

// ENOSPC while writing sstables fails the compaction; it is not corruption.
func TestENOSPCFailsCompactionWithoutCorruption(t *testing.T) {
	var full atomic.Bool
	enospc := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if full.Load() && strings.HasSuffix(op.Path, ".sst") &&
			(op.Kind == errorfs.OpCreate || op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt || op.Kind == errorfs.OpFilePreallocate) {
			return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
		}
		return nil
	})
	r := openTest(t, Config{
		Stores: []string{"full"},
		PebbleOptions: func(string) *pebble.Options {
			return &pebble.Options{FS: errorfs.Wrap(vfs.Default, enospc)}
		},
	})
	s := mustStore(t, r, "full")
	churn(t, s, 10000, 200)
	sum, _ := checksum(t, s)
	full.Store(true)
	_, err := s.Compact(t.Context(), CompactOptions{Force: true})
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Compact on a full disk = %v, want ENOSPC", err)
	}
	// Again while the disk is still full: Pebble keeps its flush pending,
	// and asking for another would block until space returns.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	_, err = s.Compact(ctx, CompactOptions{Force: true})
	cancel()
	full.Store(false)
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second Compact on a full disk = %v, want ENOSPC at once", err)
	}
	if errors.Is(err, ErrCorrupt) {
		t.Fatalf("ENOSPC reported as corruption: %v", err)
	}
	if st, cause := s.State(); st != StateOpen {
		t.Fatalf("state = %v (%v), want open", st, cause)
	}
	if got, _ := checksum(t, s); got != sum {
		t.Fatal("content changed by a failed compaction")
	}
	if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
		t.Fatalf("compaction after space returned: %v", err)
	}
}

// Verify works on a checkpoint, so tables that a concurrent compaction
// deletes are never reported as corrupt.
func TestVerifyRacingCompaction(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"busy"}})
	s := mustStore(t, r, "busy")
	churn(t, s, 5000, 100)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			churn(t, s, 5000, 100)
			if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
				t.Errorf("compact: %v", err)
				return
			}
		}
	}()
	for i := range 20 {
		res, err := s.Verify(t.Context(), VerifyOptions{Deep: i%4 == 0})
		if err != nil {
			t.Fatalf("verify %d during compactions: %v", i, err)
		}
		if res.Files == 0 {
			t.Fatalf("verify %d checked no files", i)
		}
	}
	close(stop)
	wg.Wait()
	if st, _ := s.State(); st != StateOpen {
		t.Fatalf("state = %v", st)
	}
}
