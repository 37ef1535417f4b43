package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Store is one named Pebble store. Its methods never panic on a fenced or
// closed database: every use of the underlying *pebble.DB goes through
// acquire, which refuses with a typed error unless the store is serving.
type Store struct {
	name string
	dir  string
	reg  *Registry
	log  *slog.Logger
	opts *pebble.Options // as opened: the embedder's, plus our listener and logger

	mu    sync.RWMutex
	state State
	db    *pebble.DB
	cause error // why the store is corrupt, or why its last open failed
	// halt is cancelled when the store is fenced or closed, so long
	// operations (a full compaction) stop instead of outliving the DB.
	halt     context.Context
	haltStop context.CancelFunc
	users    sync.WaitGroup // in-flight operations and open iterators

	maint sync.Mutex // serialises backups and restores of this store

	abortMu sync.Mutex
	aborts  map[*int]context.CancelCauseFunc // running compactions, stopped by a background error

	guard guard

	lastCompact atomic.Int64 // unix nanoseconds, 0 = never (this process)
	lastVerify  atomic.Int64
	bgErrors    atomic.Int64
	flushErr    atomic.Pointer[error] // the last flush's error while flushes fail; nil once one succeeds

	// changes counts what can change the LSM's numbers: every write
	// through a handle and every event Pebble reports (stats.go).
	changes atomic.Uint64
	lsm     lsmCache
}

// Name returns the store's name.
func (s *Store) Name() string { return s.name }

// Dir returns the store's live directory.
func (s *Store) Dir() string { return s.dir }

// State returns the store's lifecycle state and, when corrupt or unopened,
// the reason.
func (s *Store) State() (State, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state, s.cause
}

// acquire returns the database for one operation. Every successful acquire
// must be paired with release; fence and close wait for all of them.
func (s *Store) acquire() (*pebble.DB, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil || s.state == StateRestoring || s.state == StateClosed {
		return nil, s.refusalLocked()
	}
	s.users.Add(1)
	return s.db, nil
}

func (s *Store) release() { s.users.Done() }

// refusalLocked explains why the store does not serve. s.mu must be held.
func (s *Store) refusalLocked() error {
	switch {
	case s.state == StateClosed:
		return fmt.Errorf("store %s: %w", s.name, ErrClosed)
	case s.state == StateRestoring:
		return fmt.Errorf("store %s is being restored: %w", s.name, ErrUnavailable)
	case s.cause != nil:
		return fmt.Errorf("store %s did not open: %w: %w", s.name, ErrUnavailable, s.cause)
	default:
		return fmt.Errorf("store %s is not open: %w", s.name, ErrUnavailable)
	}
}

// longContext derives a context for a long operation that ends when ctx
// does, or when the store is fenced or closed.
func (s *Store) longContext(ctx context.Context) (context.Context, context.CancelFunc) {
	s.mu.RLock()
	halt := s.halt
	s.mu.RUnlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(halt, func() {
		cancel(fmt.Errorf("store %s: %w", s.name, ErrUnavailable))
	})
	return ctx, func() { stop(); cancel(nil) }
}

// open opens the database: first the torn-MANIFEST guard (read-only), then
// read-write. A store whose files are damaged is left in StateCorrupt with
// no database and the evidence in cause; only other failures return an error.
func (s *Store) open() error {
	opts := s.reg.pebbleOptions(s.name)
	opts.AddEventListener(s.listener())
	opts.AddEventListener(pebble.MakeLoggingEventListener(changeCounter{&s.changes}))
	opts.EnsureDefaults()
	s.opts = opts
	if err := s.guard.check(s.name, s.dir, opts); err != nil {
		if errors.Is(err, ErrCorrupt) {
			s.setCorrupt(err)
			return nil
		}
		return err
	}
	db, err := pebble.Open(s.dir, opts)
	if err != nil {
		if cerr := classifyOpenError(s.name, err); cerr != nil {
			s.setCorrupt(cerr)
			return nil
		}
		return fmt.Errorf("open store %s: %w", s.name, err)
	}
	if err := s.guard.reset(db); err != nil {
		_ = db.Close()
		return fmt.Errorf("open store %s: record file set: %w", s.name, err)
	}
	halt, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	s.db, s.state, s.cause = db, StateOpen, nil
	s.halt, s.haltStop = halt, stop
	s.mu.Unlock()
	s.log.Debug("store opened", "dir", s.dir)
	return nil
}

// setCorrupt records a store that could not be opened safely.
func (s *Store) setCorrupt(err error) {
	s.mu.Lock()
	s.state, s.cause, s.db = StateCorrupt, err, nil
	s.mu.Unlock()
	s.log.Error("store corrupt; not opened", "err", err)
	s.reg.notifyCorrupt(s.name, err)
}

// markCorrupt records damage found while the store is open. The store keeps
// serving what it can; the hook decides what happens next (a restore).
func (s *Store) markCorrupt(err error) {
	s.mu.Lock()
	first := s.state != StateCorrupt
	if s.state == StateOpen {
		s.state = StateCorrupt
	}
	if s.cause == nil {
		s.cause = err
	}
	s.mu.Unlock()
	if first {
		s.log.Error("store corrupt", "err", err)
		s.reg.notifyCorrupt(s.name, err)
	}
}

// fence stops the store from serving: state becomes to, long operations
// are cancelled, and fence waits until every in-flight operation and open
// iterator has finished. It returns the database (nil when none was open),
// which the caller now owns. If ctx ends first, the store serves again and
// fence returns ctx's error.
func (s *Store) fence(ctx context.Context, to State) (*pebble.DB, error) {
	s.mu.Lock()
	if s.state == StateClosed {
		s.mu.Unlock()
		return nil, fmt.Errorf("store %s: %w", s.name, ErrClosed)
	}
	if s.state == StateRestoring {
		s.mu.Unlock()
		return nil, fmt.Errorf("store %s is already fenced: %w", s.name, ErrUnavailable)
	}
	prev, db := s.state, s.db
	s.state, s.db = to, nil
	if s.haltStop != nil {
		s.haltStop()
	}
	s.mu.Unlock()
	drained := make(chan struct{})
	go func() { s.users.Wait(); close(drained) }()
	select {
	case <-drained:
		return db, nil
	case <-ctx.Done():
	}
	// Give up: serve again. The waiter goroutine ends when the last user
	// releases.
	halt, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	s.state, s.db, s.halt, s.haltStop = prev, db, halt, stop
	s.mu.Unlock()
	return nil, fmt.Errorf("store %s: waiting for open iterators and operations: %w", s.name, context.Cause(ctx))
}

// Close closes the store, waiting for in-flight operations and open
// iterators. Later calls on the store return ErrClosed.
func (s *Store) Close() error {
	db, err := s.fence(context.Background(), StateClosed)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return nil
		}
		return err
	}
	if db == nil {
		return nil
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.name, err)
	}
	s.log.Debug("store closed")
	return nil
}

func (s *Store) listener() pebble.EventListener {
	return pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			s.markCorrupt(&CorruptionError{Store: s.name, File: info.Path, Err: info.Details})
		},
		BackgroundError: func(err error) {
			s.bgErrors.Add(1)
			if pebble.IsCorruptionError(err) {
				s.markCorrupt(&CorruptionError{Store: s.name, Err: err})
				return
			}
			// A full disk or an I/O error fails work; it is not corruption.
			s.log.Warn("background error", "err", err)
			s.abortCompactions(err)
		},
		FlushEnd: func(info pebble.FlushInfo) {
			// Pebble reports a flush that had nothing to write with its
			// unexported errEmptyTable: not a failure.
			if info.Err != nil && info.Err.Error() != "pebble: empty table" {
				err := info.Err
				s.flushErr.Store(&err)
				return
			}
			if info.Err != nil {
				return
			}
			s.flushErr.Store(nil)
			s.recordTables(nil, info.Output)
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			if info.Err != nil {
				return
			}
			var in []pebble.TableInfo
			for _, l := range info.Input {
				in = append(in, l.Tables...)
			}
			s.recordTables(in, info.Output.Tables)
		},
		TableIngested: func(info pebble.TableIngestInfo) {
			if info.Err != nil {
				return
			}
			out := make([]pebble.TableInfo, len(info.Tables))
			for i, t := range info.Tables {
				out[i] = t.TableInfo
			}
			s.recordTables(nil, out)
		},
	}
}

// recordTables updates the torn-MANIFEST guard's record after Pebble
// installed a new version.
func (s *Store) recordTables(removed, added []pebble.TableInfo) {
	if err := s.guard.apply(removed, added); err != nil {
		s.log.Warn("torn-MANIFEST guard record not updated", "err", err)
	}
}

// failingFlush returns the last flush error while Pebble's flushes are
// failing (it retries them until they succeed), and nil otherwise.
func (s *Store) failingFlush() error {
	if p := s.flushErr.Load(); p != nil {
		return *p
	}
	return nil
}

// watchBackground registers cancel to be called with the first background
// error Pebble reports until the returned func is called. A manual
// compaction that hits ENOSPC is otherwise retried by Pebble until space
// returns, and db.Compact waits all that time.
func (s *Store) watchBackground(cancel context.CancelCauseFunc) (unwatch func()) {
	key := new(int)
	s.abortMu.Lock()
	if s.aborts == nil {
		s.aborts = map[*int]context.CancelCauseFunc{}
	}
	s.aborts[key] = cancel
	s.abortMu.Unlock()
	return func() {
		s.abortMu.Lock()
		delete(s.aborts, key)
		s.abortMu.Unlock()
	}
}

func (s *Store) abortCompactions(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	for _, cancel := range s.aborts {
		cancel(err)
	}
}

// classifyOpenError returns a CorruptionError when an open failed because
// store files are damaged, missing or mis-sized, and nil otherwise.
func classifyOpenError(name string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, os.ErrPermission):
		return nil
	case pebble.IsCorruptionError(err), errors.Is(err, fs.ErrNotExist):
		return &CorruptionError{Store: name, File: fileFromError(msg), Err: err}
	}
	// Pebble reports a mis-sized or unknown table in words, not types.
	for _, hint := range []string{"size mismatch", "(type sstable)", ".sst", "MANIFEST", "checksum"} {
		if strings.Contains(msg, hint) {
			return &CorruptionError{Store: name, File: fileFromError(msg), Err: err}
		}
	}
	return nil
}

// fileFromError picks the first path-like word naming a store file.
func fileFromError(msg string) string {
	for _, w := range strings.Fields(msg) {
		w = strings.Trim(w, `":,()`)
		if strings.HasSuffix(w, ".sst") || strings.Contains(filepath.Base(w), "MANIFEST-") {
			return w
		}
		if len(w) == 6 && strings.Trim(w, "0123456789") == "" {
			return w + ".sst" // "L6: 000015: file 000015 (type sstable) ..."
		}
	}
	return ""
}

func nowNano() int64 { return time.Now().UnixNano() }

func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
