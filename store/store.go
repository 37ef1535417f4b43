package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// listed caches what Backups read of each backup (backupcache.go).
	listed backupCache

	mu    sync.RWMutex
	state State
	db    *pebble.DB
	cause error // why the store is corrupt, or why its last open failed
	// halt is cancelled when the store is fenced or closed, so long
	// operations (a full compaction) stop instead of outliving the DB.
	halt     context.Context
	haltStop context.CancelFunc
	users    userCount // in-flight operations and open iterators
	// events are state changes and corruption reports not yet handed to
	// the registry's hooks, in the order they happened; delivering is set
	// while a goroutine hands them over (events.go). Both under mu.
	events     []stateEvent
	delivering bool
	// retrying is set while a goroutine of the registry retries opening
	// the store (StateUnavailable). Under reg.mu.
	retrying bool

	// notOwner holds the cause given to Disown while the store is
	// disowned, nil while it is owned: writes check it on every call.
	notOwner atomic.Pointer[error]

	maint sync.Mutex // serialises backups and restores of this store

	// compactionCancels holds the cancel of each running compaction, by
	// the registration watchBackground made for it; a background error
	// calls them all.
	abortMu           sync.Mutex
	nextWatch         compactionWatch
	compactionCancels map[compactionWatch]context.CancelCauseFunc

	guard guard

	lastCompact atomic.Int64 // unix nanoseconds, 0 = never (this process)
	lastVerify  atomic.Int64
	bgErrors    atomic.Int64
	flushErr    atomic.Pointer[error] // the last flush's error while flushes fail; nil once one succeeds

	// changes counts what can change the LSM's numbers: every write
	// through a handle and every event Pebble reports (stats.go).
	changes atomic.Uint64
	lsm     lsmCache

	clog logState // the commit log, with Config.Ship (log.go)
}

// Name returns the store's name.
func (s *Store) Name() string { return s.name }

// Dir returns the store's live directory.
func (s *Store) Dir() string { return s.dir }

// State returns the store's lifecycle state and, when corrupt, unavailable
// or unopened, the reason.
func (s *Store) State() (State, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state, s.cause
}

func (s *Store) isUnavailable() bool {
	st, _ := s.State()
	return st == StateUnavailable
}

// retryOpen is one retry of an unavailable store's open: it settles an
// interrupted restore first (Open may have failed to), then opens. It holds
// maint, so it never runs beside a restore, which opens the store itself.
func (s *Store) retryOpen() {
	s.maint.Lock()
	defer s.maint.Unlock()
	if !s.isUnavailable() {
		return
	}
	if err := s.reg.recoverRestore(s.name); err != nil {
		s.setUnavailable(nil, fmt.Errorf("settle interrupted restore: %w", err))
		return
	}
	_ = s.open()
}

// acquire returns the database for one operation. Every successful acquire
// must be paired with release; fence and close wait for all of them.
func (s *Store) acquire() (*pebble.DB, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil || s.state == StateRestoring || s.state == StateClosed {
		return nil, s.refusalLocked()
	}
	s.users.add()
	return s.db, nil
}

func (s *Store) release() { s.users.done() }

// refusalLocked explains why the store does not serve. s.mu must be held.
func (s *Store) refusalLocked() error {
	switch {
	case s.state == StateClosed:
		return fmt.Errorf("store %s: %w", s.name, ErrClosed)
	case s.state == StateRestoring:
		return fmt.Errorf("store %s is being restored: %w", s.name, ErrUnavailable)
	case s.state == StateUnavailable && s.cause != nil:
		return fmt.Errorf("store %s is unavailable: %w: %w", s.name, ErrUnavailable, s.cause)
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

// open opens the database and records the outcome in the store's state:
// StateOpen; StateCorrupt when the files are damaged (see openDB), with
// OnCorrupt called; StateUnavailable for any other failure, which the
// registry then retries. It returns the cause when the store is
// unavailable, and nil when it opened or is corrupt. A store closed while
// it was opening stays closed.
func (s *Store) open() error {
	a := &openAttempt{}
	opts := s.reg.pebbleOptions(s.name)
	opts.AddEventListener(s.listener(a))
	opts.AddEventListener(pebble.MakeLoggingEventListener(changeCounter{&s.changes}))
	opts.EnsureDefaults()
	s.opts = opts
	db, err := s.openDB(opts)
	if err == nil && s.reg.cfg.Ship {
		if err = s.startLog(db); err != nil {
			_ = db.Close()
		}
	}
	var cerr *CorruptionError
	switch {
	case err == nil:
		s.settle(a, StateOpen, db, nil)
		s.log.Debug("store opened", "dir", s.dir)
		return nil
	case errors.As(err, &cerr):
		s.setCorrupt(a, cerr)
		return nil
	default:
		s.setUnavailable(a, err)
		return err
	}
}

// openAttempt ties the damage a database's event listener reports to that
// database. A report that comes while the open is still running (Pebble
// loads table stats at once) waits for it to end; one from a database the
// store no longer serves (fenced for a restore or a close, or replaced)
// is stale and only logged.
type openAttempt struct {
	done    bool       // the open ended; under s.mu
	db      *pebble.DB // the database it installed, if any; under s.mu
	pending error      // damage reported before the open ended; under s.mu
}

// settle records the end of an open (a may be nil when there was no
// attempt): the new state, the database (nil unless open) and the cause.
// Corruption and unavailability go through setCorrupt and setUnavailable,
// which call it. It reports false when the store was closed meanwhile:
// the result is then dropped.
func (s *Store) settle(a *openAttempt, st State, db *pebble.DB, cause error) bool {
	s.mu.Lock()
	if a != nil {
		a.done = true
	}
	if s.state == StateClosed {
		// Closed while the open ran (a retry racing Registry.Close): the
		// result is not wanted.
		s.mu.Unlock()
		if db != nil {
			_ = db.Close()
		}
		return false
	}
	changed := s.state != st
	s.db, s.state, s.cause = db, st, cause
	var pending error
	if db != nil {
		s.halt, s.haltStop = context.WithCancel(context.Background())
		if a != nil {
			a.db, pending = db, a.pending
		}
	}
	if changed {
		s.queueLocked(stateEvent{state: st, cause: cause, changed: true, corrupt: st == StateCorrupt})
	}
	s.mu.Unlock()
	s.deliver()
	if pending != nil {
		s.markCorrupt(db, pending)
	}
	return true
}

// setCorrupt records a store that could not be opened safely.
func (s *Store) setCorrupt(a *openAttempt, err error) {
	if s.settle(a, StateCorrupt, nil, err) {
		s.log.Error("store corrupt; not opened", "err", err)
	}
}

// setUnavailable records a store that could not be opened for a reason
// that is not damage, and has the registry retry the open.
func (s *Store) setUnavailable(a *openAttempt, err error) {
	if s.settle(a, StateUnavailable, nil, err) {
		s.log.Warn("store unavailable; the open will be retried", "err", err)
		s.reg.startRetry(s)
	}
}

// reportCorrupt is how a database's event listener reports damage.
func (s *Store) reportCorrupt(a *openAttempt, err error) {
	s.mu.Lock()
	if !a.done {
		if a.pending == nil {
			a.pending = err
		}
		s.mu.Unlock()
		return
	}
	db := a.db
	s.mu.Unlock()
	s.markCorrupt(db, err)
}

// markCorrupt records damage that db, the store's database, showed (or a
// checkpoint of it). The store keeps serving what it can; the hook decides
// what happens next (a restore). Damage from a database the store no
// longer serves (nil, fenced for a restore or a close, or replaced) is
// stale and only logged, so OnCorrupt is never called for a store that is
// being restored, closed or unavailable.
func (s *Store) markCorrupt(db *pebble.DB, err error) {
	s.mu.Lock()
	if db == nil || db != s.db {
		s.mu.Unlock()
		s.log.Warn("damage reported by a database the store no longer serves; ignored", "err", err)
		return
	}
	first := s.state != StateCorrupt
	if first {
		s.state = StateCorrupt
		s.cause = err
		s.queueLocked(stateEvent{state: StateCorrupt, cause: err, changed: true, corrupt: true})
	}
	s.mu.Unlock()
	if first {
		s.log.Error("store corrupt", "err", err)
		s.deliver()
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
	s.queueLocked(stateEvent{state: to, cause: s.cause, changed: true})
	s.mu.Unlock()
	s.deliver()
	drained := s.users.drained()
	select {
	case <-drained:
		return db, nil
	case <-ctx.Done():
	}
	select {
	case <-drained: // both were ready: the store did drain
		return db, nil
	default:
	}
	// Give up: serve again. Users that are still running release into the
	// counter as usual; nothing waits on it any more.
	halt, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	s.state, s.db, s.halt, s.haltStop = prev, db, halt, stop
	s.queueLocked(stateEvent{state: prev, cause: s.cause, changed: true})
	s.mu.Unlock()
	s.deliver()
	if prev == StateUnavailable {
		s.reg.startRetry(s)
	}
	return nil, fmt.Errorf("store %s: waiting for open iterators and operations: %w", s.name, context.Cause(ctx))
}

// Close closes the store, waiting for in-flight operations and open
// iterators. Later calls on the store return ErrClosed.
func (s *Store) Close() error { return s.closeContext(context.Background()) }

// closeContext closes the store unless ctx ends before its operations and
// iterators drain: the store is then left open (a closed *pebble.DB would
// panic under them) and the error says so.
func (s *Store) closeContext(ctx context.Context) error {
	db, err := s.fence(ctx, StateClosed)
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

// listener is the event listener of the database a opens.
func (s *Store) listener(a *openAttempt) pebble.EventListener {
	return pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			s.reportCorrupt(a, &CorruptionError{Store: s.name, File: info.Path, Err: info.Details})
		},
		BackgroundError: func(err error) {
			s.bgErrors.Add(1)
			if pebble.IsCorruptionError(err) {
				s.reportCorrupt(a, &CorruptionError{Store: s.name, Err: err})
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
	s.abortMu.Lock()
	if s.compactionCancels == nil {
		s.compactionCancels = map[compactionWatch]context.CancelCauseFunc{}
	}
	s.nextWatch++
	id := s.nextWatch
	s.compactionCancels[id] = cancel
	s.abortMu.Unlock()
	return func() {
		s.abortMu.Lock()
		delete(s.compactionCancels, id)
		s.abortMu.Unlock()
	}
}

// compactionWatch numbers a running compaction's registration with
// watchBackground, within its store.
type compactionWatch uint64

func (s *Store) abortCompactions(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.abortMu.Lock()
	defer s.abortMu.Unlock()
	for _, cancel := range s.compactionCancels {
		cancel(err)
	}
}

// classifyOpenError returns a CorruptionError when Pebble typed an open's
// failure as corruption (pebble.IsCorruptionError), and nil otherwise. The
// text of an error is never evidence: an EIO, EMFILE or ENOSPC on a table
// or the MANIFEST names those files too. Missing and mis-sized tables,
// which Pebble reports untyped, are found by storekeeper's own table check
// (checkTables) before Pebble's open, and a rolled-back MANIFEST by the
// guard; every other failure leaves the store unavailable.
func classifyOpenError(name string, err error) error {
	if err != nil && pebble.IsCorruptionError(err) {
		return &CorruptionError{Store: name, File: fileFromError(err.Error()), Err: err}
	}
	return nil
}

// fileFromError picks the first path-like word naming a store file, to
// name it in a CorruptionError; it never decides what an error means.
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
