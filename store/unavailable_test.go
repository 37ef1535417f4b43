package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/jonboulle/clockwork"

	"storekeeper/internal/testsignal"
)

// Only Pebble's typed corruption is corruption; the words in an error are
// never evidence.
func TestClassifyOpenError(t *testing.T) {
	// A real corruption error from Pebble: a "table" of zeros.
	junk := filepath.Join(t.TempDir(), "000012.sst")
	if err := os.WriteFile(junk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := &pebble.Options{}
	opts.EnsureDefaults()
	_, badTable := validateTable(opts, vfs.Default, junk)
	if !pebble.IsCorruptionError(badTable) {
		t.Fatalf("reading a table of zeros: %v, want a corruption error", badTable)
	}
	pathErr := func(op, path string, errno syscall.Errno) error {
		return &fs.PathError{Op: op, Path: path, Err: errno}
	}
	for _, tc := range []struct {
		name    string
		err     error
		corrupt bool
	}{
		{"pebble corruption marker", fmt.Errorf("open store kv: %w", pebble.ErrCorruption), true},
		{"bad table from pebble", fmt.Errorf("open store kv: %w", fmt.Errorf("L6: %w", badTable)), true},
		{"EIO opening a table", pathErr("open", "/data/kv/000012.sst", syscall.EIO), false},
		{"EIO opening a table, wrapped", fmt.Errorf("open store kv: %w", pathErr("open", "/data/kv/000012.sst", syscall.EIO)), false},
		{"EMFILE opening a table", fmt.Errorf("L0: %w", pathErr("open", "/data/kv/000012.sst", syscall.EMFILE)), false},
		{"ENOSPC writing the MANIFEST", fmt.Errorf("MANIFEST create failed: %w", pathErr("write", "/data/kv/MANIFEST-000009", syscall.ENOSPC)), false},
		{"EACCES on the MANIFEST", pathErr("open", "/data/kv/MANIFEST-000009", syscall.EACCES), false},
		{"EIO reading a checksum", fmt.Errorf("read checksum of /data/kv/000012.sst: %w", syscall.EIO), false},
		// Pebble words a missing or mis-sized table without a type:
		// storekeeper's table check decides those, not this.
		{"missing table in Pebble's words", fmt.Errorf("L0: 000005: file 000005 (type sstable) unknown to the objstorage provider: %w", fs.ErrNotExist), false},
		{"size mismatch in Pebble's words", errors.New("L0: 000007: object size mismatch (/data/kv/000007.sst): 100 (disk) != 12611 (MANIFEST)"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classifyOpenError("kv", tc.err)
			if (got != nil) != tc.corrupt {
				t.Fatalf("classifyOpenError(%v) = %v, want corrupt=%v", tc.err, got, tc.corrupt)
			}
			if got != nil && (!errors.Is(got, ErrCorrupt) || !errors.Is(got, tc.err)) {
				t.Fatalf("corruption %v does not match ErrCorrupt and its evidence", got)
			}
		})
	}
}

// faultFixture is a closed store with data in several tables, and what a
// test needs to open it through an errorfs with a fake clock.
type faultFixture struct {
	dir    string
	sum    string
	n      int
	clock  *clockwork.FakeClock
	toggle *errorfs.Toggle
	states chan stateChange
	// corrupt counts OnCorrupt calls; none is ever expected here.
	corrupt atomic.Int64
}

type stateChange struct {
	store string
	st    State
	cause error
}

func newFaultFixture(t *testing.T) *faultFixture {
	t.Helper()
	f := &faultFixture{dir: t.TempDir(), clock: clockwork.NewFakeClock(), states: make(chan stateChange, 64)}
	r := openTest(t, Config{DataDir: f.dir, Stores: []string{"kv"}})
	s := mustStore(t, r, "kv")
	churn(t, s, 5000, 100)
	f.sum, f.n = checksum(t, s)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// open opens the registry with inj behind a toggle, on when on is set.
func (f *faultFixture) open(t *testing.T, inj errorfs.Injector, on bool) *Registry {
	t.Helper()
	f.toggle = &errorfs.Toggle{Injector: inj}
	if on {
		f.toggle.On()
	}
	efs := errorfs.Wrap(vfs.Default, f.toggle)
	return openTest(t, Config{
		DataDir:       f.dir,
		Stores:        []string{"kv"},
		Clock:         f.clock,
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{FS: efs} },
		OnCorrupt:     func(string, error) { f.corrupt.Add(1) },
		OnStateChange: func(store string, st State, cause error) {
			select {
			case f.states <- stateChange{store, st, cause}:
			default:
			}
		},
	})
}

// waitState waits for the state-change hook to report st.
func (f *faultFixture) waitState(t *testing.T, st State) stateChange {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case c := <-f.states:
			if c.st == st {
				return c
			}
		case <-timeout:
			t.Fatalf("the state-change hook did not report %v", st)
		}
	}
}

// awaitRetry waits until the store's next retry is waiting on the clock:
// the previous attempt, if any, is over.
func (f *faultFixture) awaitRetry(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := f.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("no retry is waiting on the clock: %v", err)
	}
}

// retry waits for the next retry and advances the fake clock by wait, which
// must be at least the retry's wait to start it.
func (f *faultFixture) retry(t *testing.T, wait time.Duration) {
	t.Helper()
	f.awaitRetry(t)
	f.clock.Advance(wait)
}

// injectOn returns an injector of errno for the ops of kinds on files whose
// name matches.
func injectOn(errno syscall.Errno, match func(base string) bool, kinds ...errorfs.OpKind) errorfs.Injector {
	return errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !match(filepath.Base(op.Path)) {
			return nil
		}
		for _, k := range kinds {
			if op.Kind == k {
				return &os.PathError{Op: fmt.Sprint("op", int(op.Kind)), Path: op.Path, Err: errno}
			}
		}
		return nil
	})
}

func isTable(base string) bool    { return strings.HasSuffix(base, ".sst") }
func isManifest(base string) bool { return strings.HasPrefix(base, "MANIFEST-") }
func anyFile(string) bool         { return true }

var writeOps = []errorfs.OpKind{errorfs.OpCreate, errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData}

// A disk fault while opening makes the store unavailable, never corrupt;
// Open still succeeds, and once the fault is gone the retry opens the
// store by itself with all its data.
func TestOpenFaultMakesStoreUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
		inj   errorfs.Injector
	}{
		{"EIO opening tables", syscall.EIO, injectOn(syscall.EIO, isTable, errorfs.OpOpen)},
		{"EMFILE opening tables", syscall.EMFILE, injectOn(syscall.EMFILE, isTable, errorfs.OpOpen)},
		{"EACCES opening tables", syscall.EACCES, injectOn(syscall.EACCES, isTable, errorfs.OpOpen)},
		{"ENOSPC on table opens", syscall.ENOSPC, injectOn(syscall.ENOSPC, isTable, errorfs.OpOpen)},
		{"EIO reading the MANIFEST", syscall.EIO, injectOn(syscall.EIO, isManifest, errorfs.OpFileRead, errorfs.OpFileReadAt)},
		{"EIO on the MANIFEST's stat", syscall.EIO, injectOn(syscall.EIO, isManifest, errorfs.OpStat)},
		{"ENOSPC on every write", syscall.ENOSPC, injectOn(syscall.ENOSPC, anyFile, writeOps...)},
		{"EROFS on every write", syscall.EROFS, injectOn(syscall.EROFS, anyFile, writeOps...)},
		{"EIO listing the store", syscall.EIO, injectOn(syscall.EIO, func(b string) bool { return b == "kv" }, errorfs.OpList)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultFixture(t)
			r := f.open(t, tc.inj, true)
			s := mustStore(t, r, "kv")

			st, cause := s.State()
			if st != StateUnavailable || !errors.Is(cause, tc.errno) || errors.Is(cause, ErrCorrupt) {
				t.Fatalf("state = %v (%v), want unavailable for %v", st, cause, tc.errno)
			}
			if c := f.waitState(t, StateUnavailable); c.store != "kv" || !errors.Is(c.cause, tc.errno) {
				t.Fatalf("state change %+v", c)
			}
			_, err := s.Get([]byte("key-00000002"))
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), cause.Error()) {
				t.Fatalf("Get on an unavailable store = %v, want ErrUnavailable naming %v", err, cause)
			}
			if err := s.Set([]byte("k"), nil); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Set on an unavailable store = %v", err)
			}
			if stats := s.Stats(); stats.State != StateUnavailable || stats.Error != cause.Error() {
				t.Fatalf("stats: state %v error %q, want unavailable with %q", stats.State, stats.Error, cause)
			}
			if _, err := s.Verify(t.Context(), VerifyOptions{}); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify on an unavailable store = %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(r.DataDir(), "kv", probeName)); b != nil {
				t.Fatal("the write probe left its file")
			}

			// Still failing: the retries keep the store unavailable, the
			// second one waiting twice as long as the first.
			f.retry(t, openRetryMin)
			f.retry(t, 2*openRetryMin)
			f.awaitRetry(t) // the second attempt is over
			if st, _ := s.State(); st != StateUnavailable {
				t.Fatalf("state while the fault lasts = %v", st)
			}

			f.toggle.Off()
			f.retry(t, 4*openRetryMin)
			if c := f.waitState(t, StateOpen); c.cause != nil {
				t.Fatalf("open reported with cause %v", c.cause)
			}
			if got, n := checksum(t, s); got != f.sum || n != f.n {
				t.Fatalf("after the retry opened the store: %d keys, want %d, content differs=%v", n, f.n, got != f.sum)
			}
			if err := s.Set([]byte("new"), []byte("v")); err != nil {
				t.Fatalf("write after the store opened: %v", err)
			}
			if n := f.corrupt.Load(); n != 0 {
				t.Fatalf("OnCorrupt called %d times for a disk fault", n)
			}
		})
	}
}

// A read that fails while the store is open fails that operation, with its
// error; the store stays open and is not reported corrupt.
func TestReadFaultWhileOpenIsNotCorruption(t *testing.T) {
	for _, tc := range []struct {
		name  string
		errno syscall.Errno
		kinds []errorfs.OpKind
	}{
		{"EIO reading tables", syscall.EIO, []errorfs.OpKind{errorfs.OpFileReadAt, errorfs.OpFileRead}},
		{"EMFILE opening tables", syscall.EMFILE, []errorfs.OpKind{errorfs.OpOpen, errorfs.OpFileReadAt, errorfs.OpFileRead}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultFixture(t)
			r := f.open(t, injectOn(tc.errno, isTable, tc.kinds...), false)
			s := mustStore(t, r, "kv")
			f.waitState(t, StateOpen)
			// Nothing in the background may be opening a table while the
			// fault is on: a reader that joins Pebble's open of a table
			// after the fault ends still gets the open's error. Loading
			// the tables' stats after the open does (Pebble signals its
			// end to no one: polled, as testsignal does).
			if !testsignal.Poll(time.Minute, func() bool {
				s.mu.RLock()
				m := s.db.Metrics()
				s.mu.RUnlock()
				return m.Table.InitialStatsCollectionComplete && m.Table.PendingStatsCollectionCount == 0 && m.Compact.NumInProgress == 0
			}) {
				t.Fatal("Pebble still loading table stats or compacting after a minute")
			}
			f.toggle.On()
			err := s.Scan(t.Context(), nil, nil, func(_, _ []byte) error { return nil })
			if !errors.Is(err, tc.errno) || errors.Is(err, ErrCorrupt) {
				t.Fatalf("Scan under %v = %v", tc.errno, err)
			}
			if st, cause := s.State(); st != StateOpen {
				t.Fatalf("state after a failed read = %v (%v), want open", st, cause)
			}
			f.toggle.Off()
			if got, _ := checksum(t, s); got != f.sum {
				t.Fatal("content differs once reads work again")
			}
			if n := f.corrupt.Load(); n != 0 {
				t.Fatalf("OnCorrupt called %d times for a read error", n)
			}
			select {
			case c := <-f.states:
				t.Fatalf("state changed to %v (%v) on a read error", c.st, c.cause)
			default:
			}
		})
	}
}

// A read error while verifying fails the verification with that error; it
// is not corruption (a checksum mismatch is: TestVerifyFindsFlippedByte).
func TestVerifyReadErrorIsNotCorruption(t *testing.T) {
	f := newFaultFixture(t)
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		// Only the checkpoint's copies: the live store keeps working.
		if strings.Contains(op.Path, filepath.Join(MetaDir, "work")+string(filepath.Separator)) &&
			isTable(filepath.Base(op.Path)) && op.Kind == errorfs.OpFileReadAt {
			return &os.PathError{Op: "read", Path: op.Path, Err: syscall.EIO}
		}
		return nil
	})
	r := f.open(t, inj, false)
	s := mustStore(t, r, "kv")
	f.toggle.On()
	_, err := s.Verify(t.Context(), VerifyOptions{})
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify with a failing read = %v, want EIO and no corruption", err)
	}
	if st, cause := s.State(); st != StateOpen {
		t.Fatalf("state = %v (%v), want open", st, cause)
	}
	if n := f.corrupt.Load(); n != 0 {
		t.Fatalf("OnCorrupt called %d times", n)
	}
	f.toggle.Off()
	if _, err := s.Verify(t.Context(), VerifyOptions{Deep: true}); err != nil {
		t.Fatalf("Verify once reads work: %v", err)
	}
}

// lowDiskFS reports avail free bytes.
type lowDiskFS struct {
	vfs.FS
	avail *atomic.Uint64
}

func (l lowDiskFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	u, err := l.FS.GetDiskUsage(path)
	u.AvailBytes = l.avail.Load()
	return u, err
}

// Too little room for what a read-write open writes (WAL replay, a new
// MANIFEST): unavailable with ErrNoSpace, and open once there is room.
func TestOpenWithoutRoomIsUnavailable(t *testing.T) {
	f := newFaultFixture(t)
	var avail atomic.Uint64
	avail.Store(1000)
	low := lowDiskFS{FS: vfs.Default, avail: &avail}
	r := openTest(t, Config{
		DataDir:       f.dir,
		Clock:         f.clock,
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{FS: low} },
		OnCorrupt:     func(string, error) { f.corrupt.Add(1) },
		OnStateChange: func(store string, st State, cause error) { f.states <- stateChange{store, st, cause} },
	})
	s := mustStore(t, r, "kv")
	st, cause := s.State()
	var serr *SpaceError
	if st != StateUnavailable || !errors.Is(cause, ErrNoSpace) || !errors.As(cause, &serr) || serr.Op != "open" || serr.Need < openSlack {
		t.Fatalf("state = %v (%v), want unavailable for lack of space", st, cause)
	}
	avail.Store(1 << 40)
	f.retry(t, openRetryMin)
	f.waitState(t, StateOpen)
	if got, _ := checksum(t, s); got != f.sum {
		t.Fatal("content differs")
	}
	if f.corrupt.Load() != 0 {
		t.Fatal("OnCorrupt called")
	}
}

// The transitions of a store come to OnStateChange in order, with their
// causes; OnCorrupt comes once with the corruption.
func TestOnStateChangeSeesEveryTransition(t *testing.T) {
	f := newCorruptFixture(t)
	r := f.open(t)
	s := mustStore(t, r, "victim")
	var got []string
	changes := make(chan string, 16)
	remove := r.OnStateChange(func(store string, st State, cause error) {
		changes <- store + ":" + st.String()
	})
	flipByte(t, f.largestSST(t), 512)
	if _, err := s.Verify(t.Context(), VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify = %v", err)
	}
	got = append(got, <-changes)
	f.wantReport(t, "victim")
	db, err := s.fence(t.Context(), StateRestoring)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, <-changes)
	_ = db.Close()
	if err := s.open(); err != nil { // what a restore does last
		t.Fatal(err)
	}
	got = append(got, <-changes)
	remove()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-changes:
		t.Fatalf("a removed hook was called: %s", c)
	default:
	}
	want := []string{"victim:corrupt", "victim:restoring", "victim:open"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}
