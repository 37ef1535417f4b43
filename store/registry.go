package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jonboulle/clockwork"
)

// MetaDir is the name, inside the data directory, of storekeeper's own
// area: the instance lock, guard records and work areas that must share
// the live stores' filesystem. It is never a store.
const MetaDir = ".storekeeper"

// Config configures a Registry. The zero value of every field but DataDir
// is usable.
type Config struct {
	// DataDir holds one subdirectory per store.
	DataDir string
	// Stores are names to create when absent. Existing subdirectories of
	// DataDir are stores too.
	Stores []string
	// BackupDir holds backups, one subdirectory per store. It may be on
	// another filesystem but must not be inside DataDir (nor hold it).
	// Empty: backups and restores are refused with ErrNoBackupDir.
	BackupDir string
	// BackupFS is the filesystem BackupDir is reached through (default the
	// real one); tests wrap it to inject faults.
	BackupFS vfs.FS
	// Retention decides which backups pruning keeps.
	Retention Retention
	// Quarantine bounds the generations restores replaced.
	Quarantine Quarantine
	// PebbleOptions returns the Pebble options for one store: comparer,
	// merger, cache, format version, FS. An embedding application supplies
	// it; nil means Pebble's defaults. The registry clones what it gets and
	// adds its own event listener and logger. It is called again when a
	// restore reopens a store, so what the options share (a Cache) must
	// outlive the registry.
	PebbleOptions func(store string) *pebble.Options
	// OnCorrupt is called when a store is found corrupt, once per store
	// until it is restored. It must not block: Pebble calls it from read
	// paths. It is never called for an unavailable store.
	OnCorrupt func(store string, err error)
	// OnStateChange is called on every change of a store's state, with the
	// new state and its cause (see Registry.OnStateChange), from the start
	// of Open on. It must not block.
	OnStateChange func(store string, st State, cause error)
	// Clock drives the retries of unavailable stores' opens (default the
	// real clock); tests pass a fake one to retry without waiting.
	Clock clockwork.Clock
	// Rule decides whether a compaction is worth it.
	Rule CompactionRule
	// CompactTimeout bounds one compaction (default 1h). Pebble's Compact can
	// run forever under a heavy writer.
	CompactTimeout time.Duration
	// NoSync makes handle writes return before the WAL is synced: faster,
	// and a crash may lose the last writes. Default: every write is synced.
	NoSync bool
	// Ship keeps each store's commit log for point-in-time recovery: the
	// WALs Pebble is done with stay in <store>/archive/ until TrimLog,
	// every handle write carries its commit time, and each store has a
	// timeline (see ReadLog). A shipper must read and trim the log, or
	// archive/ grows without bound.
	Ship bool
	// Logger receives the registry's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("store: data dir is required")
	}
	for _, n := range c.Stores {
		if err := ValidateName(n); err != nil {
			return err
		}
	}
	if c.BackupDir != "" && (within(c.BackupDir, c.DataDir) || within(c.DataDir, c.BackupDir)) {
		return fmt.Errorf("store: backup dir %s must not be inside the data dir %s, nor hold it", c.BackupDir, c.DataDir)
	}
	if c.Retention.Last < 0 || c.Retention.Daily < 0 || c.Quarantine.MaxCount < 0 {
		return errors.New("store: retention and quarantine counts must not be negative")
	}
	if c.CompactTimeout < 0 {
		return errors.New("store: compact timeout must not be negative")
	}
	if err := c.Rule.validate(); err != nil {
		return err
	}
	return nil
}

func (c *Config) withDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CompactTimeout == 0 {
		c.CompactTimeout = time.Hour
	}
	c.Rule = c.Rule.withDefaults()
	c.Retention = c.Retention.withDefaults()
	c.Quarantine = c.Quarantine.withDefaults()
	if c.BackupFS == nil {
		c.BackupFS = vfs.Default
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
}

// An unavailable store's open is retried after openRetryMin, then after
// twice the previous wait, up to openRetryMax.
const (
	openRetryMin = time.Second
	openRetryMax = time.Minute
)

// Registry is the set of named stores in one data directory. One process
// holds a data directory at a time.
type Registry struct {
	cfg  Config
	log  *slog.Logger
	meta string
	lock *os.File

	backupFS vfs.FS
	// storeFS is the stores' file system when Config.PebbleOptions gives
	// none: vfs.Default with Pebble's disk-health checks, as Pebble's own
	// default would be, but closed by the registry (release), so its
	// watcher goroutine ends with it. Pebble's default closer is private to
	// the DB, and an open that fails (a corrupt or unavailable store) has
	// no DB to close: each such open left the watcher running.
	storeFS    vfs.FS
	storeFSEnd io.Closer
	writeOpts  *pebble.WriteOptions
	freeSpace  func(path string) (uint64, error) // statfs; tests replace it

	mu       sync.RWMutex
	stores   map[string]*Store
	adopting map[string]bool // Adopt runs for these names
	closed   bool            // Close began: no new retries, Store refuses
	done     bool            // every store closed and the data directory released
	stop     chan struct{}   // closed when Close begins: ends the retries
	// retries counts the goroutines retrying unavailable stores' opens.
	// Add only under mu while !closed, so never concurrently with Wait.
	retries sync.WaitGroup

	listenMu       sync.Mutex
	listeners      map[int]func(store string, err error)
	stateListeners map[int]func(store string, st State, cause error)
	nextID         int
}

// OnCorrupt adds fn to the functions called when a store is found corrupt
// (after Config.OnCorrupt), once per store until it is restored; remove
// takes it away. fn must not block: Pebble calls it from read paths. A
// store found corrupt before fn was added is in StateCorrupt: check
// Store.State for those. fn is never called for an unavailable store.
func (r *Registry) OnCorrupt(fn func(store string, err error)) (remove func()) {
	r.listenMu.Lock()
	defer r.listenMu.Unlock()
	if r.listeners == nil {
		r.listeners = map[int]func(string, error){}
	}
	id := r.nextID
	r.nextID++
	r.listeners[id] = fn
	return func() {
		r.listenMu.Lock()
		defer r.listenMu.Unlock()
		delete(r.listeners, id)
	}
}

// OnStateChange adds fn to the functions called on every change of a
// store's state (after Config.OnStateChange): open→corrupt,
// open→restoring→open, unavailable→open, …, with the new state and its
// cause (State's second result then). remove takes it away. Calls for one
// store come in the order of its changes, one at a time, and may come from
// any goroutine, Pebble's read paths included, so fn must not block; it
// may read the store, and should hand anything long (a restore) to
// another goroutine. A change made before fn was added is not replayed:
// check Store.State.
func (r *Registry) OnStateChange(fn func(store string, st State, cause error)) (remove func()) {
	r.listenMu.Lock()
	defer r.listenMu.Unlock()
	if r.stateListeners == nil {
		r.stateListeners = map[int]func(string, State, error){}
	}
	id := r.nextID
	r.nextID++
	r.stateListeners[id] = fn
	return func() {
		r.listenMu.Lock()
		defer r.listenMu.Unlock()
		delete(r.stateListeners, id)
	}
}

// Open opens every store in cfg.DataDir and those named in cfg.Stores,
// creating the missing ones. A store that is damaged stays listed in
// StateCorrupt with its error; one that cannot be opened for any other
// reason (an I/O error, a full disk, …) stays listed in StateUnavailable
// with its error, and the registry retries opening it with backoff until
// it opens or the registry is closed. Open fails only for invalid
// configuration, a data directory held by another process, or an I/O
// error on the data directory itself or the backup directory.
func Open(cfg Config) (*Registry, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.withDefaults()
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dataDir
	if cfg.BackupDir != "" {
		if cfg.BackupDir, err = filepath.Abs(cfg.BackupDir); err != nil {
			return nil, err
		}
	}
	r := &Registry{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "store"),
		meta:   filepath.Join(dataDir, MetaDir),
		stores: make(map[string]*Store),
		stop:   make(chan struct{}),

		backupFS:  cfg.BackupFS,
		writeOpts: pebble.Sync,
		freeSpace: freeBytes,
	}
	if cfg.NoSync {
		r.writeOpts = pebble.NoSync
	}
	r.storeFS, r.storeFSEnd = vfs.WithDiskHealthChecks(vfs.Default, diskSlowThreshold, nil, r.diskSlow)
	for _, d := range []string{dataDir, r.meta, filepath.Join(r.meta, "guard")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			r.release()
			return nil, fmt.Errorf("store: create %s: %w", d, err)
		}
	}
	if r.lock, err = lockInstance(filepath.Join(r.meta, "instance.lock")); err != nil {
		r.release()
		return nil, err
	}
	names, err := r.discover()
	var failed map[string]error
	if err == nil {
		failed, err = r.recover(names)
	}
	if err != nil {
		r.release()
		return nil, err
	}
	unavailable := 0
	for _, name := range names {
		if s := r.openStore(name, failed[name]); s.isUnavailable() {
			unavailable++
		}
	}
	r.log.Info("stores opened", "data_dir", dataDir, "count", len(names), "unavailable", unavailable)
	return r, nil
}

// recover runs before any store opens, holding the instance lock: it
// finishes or rolls back interrupted restores, and removes what interrupted
// verifications and backups left. A store whose restore could not be
// settled is returned with the error: it is left unavailable, and its
// retries settle the restore first.
func (r *Registry) recover(names []string) (map[string]error, error) {
	if err := os.RemoveAll(filepath.Join(r.meta, "work")); err != nil {
		return nil, fmt.Errorf("store: clean work area: %w", err)
	}
	journals, _ := filepath.Glob(filepath.Join(r.meta, "restore", "*"))
	for _, j := range journals {
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(j), ".json"), ".staged")
		if ValidateName(name) == nil && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	failed := map[string]error{}
	for _, name := range names {
		if err := r.recoverRestore(name); err != nil {
			failed[name] = fmt.Errorf("settle interrupted restore: %w", err)
			r.log.Error("interrupted restore not settled; the store stays unavailable", "store", name, "err", err)
		}
	}
	if r.cfg.BackupDir != "" {
		if err := r.cleanBackupGarbage(); err != nil {
			return nil, fmt.Errorf("store: clean backup dir: %w", err)
		}
	}
	return failed, nil
}

// dataFS is the filesystem of the data directory's own files (journals,
// quarantine); stores reach theirs through their Pebble options.
func (r *Registry) dataFS() vfs.FS { return vfs.Default }

// BackupDir returns the absolute backup directory, or "".
func (r *Registry) BackupDir() string { return r.cfg.BackupDir }

// discover lists the stores: valid subdirectory names plus configured ones.
func (r *Registry) discover() ([]string, error) {
	entries, err := os.ReadDir(r.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", r.cfg.DataDir, err)
	}
	names := slices.Clone(r.cfg.Stores)
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || n[0] == '.' || n == "lost+found" {
			continue
		}
		if err := ValidateName(n); err != nil {
			r.log.Warn("ignoring directory that is not a valid store name", "dir", n)
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// openStore opens the named store and lists it, whatever the outcome:
// open, corrupt or unavailable (recoverErr, when not nil, is why its
// interrupted restore could not be settled: unavailable at once).
func (r *Registry) openStore(name string, recoverErr error) *Store {
	s := &Store{
		name:  name,
		dir:   filepath.Join(r.cfg.DataDir, name),
		reg:   r,
		log:   r.log.With("store", name),
		state: stateNew,
		guard: guard{path: filepath.Join(r.meta, "guard", name+".json")},
	}
	if recoverErr != nil {
		s.opts = r.pebbleOptions(name)
		s.opts.EnsureDefaults()
		s.setUnavailable(nil, recoverErr)
	} else {
		_ = s.open()
	}
	r.mu.Lock()
	r.stores[name] = s
	r.mu.Unlock()
	return s
}

// startRetry starts a goroutine that retries opening s, unless one is
// running or the registry is closing.
func (r *Registry) startRetry(s *Store) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || s.retrying {
		return
	}
	s.retrying = true
	r.retries.Add(1)
	go r.retryOpen(s)
}

// retryOpen retries opening s, with backoff, while it is unavailable and
// the registry is not closing.
func (r *Registry) retryOpen(s *Store) {
	defer r.retries.Done()
	wait := openRetryMin
	for {
		t := r.cfg.Clock.NewTimer(wait)
		select {
		case <-r.stop:
			t.Stop()
			r.endRetry(s)
			return
		case <-t.Chan():
		}
		s.retryOpen()
		if r.endRetry(s) {
			return
		}
		wait = min(2*wait, openRetryMax)
		st, cause := s.State()
		s.log.Info("store still unavailable", "state", st, "err", cause, "next_retry", wait)
	}
}

// endRetry reports whether the retries of s are over (s is no longer
// unavailable, or the registry is closing) and then marks them so. Under
// r.mu, so that a store becoming unavailable again just after starts a
// new retry goroutine rather than counting on this one.
func (r *Registry) endRetry(s *Store) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed && s.isUnavailable() {
		return false
	}
	s.retrying = false
	return true
}

// Store returns the named store. It only looks the name up in memory; a
// name not listed is then validated, to say whether it is invalid or
// unknown. Hostile input never reaches the filesystem.
func (r *Registry) Store(name string) (*Store, error) {
	r.mu.RLock()
	s, ok := r.stores[name]
	closed := r.closed
	r.mu.RUnlock()
	if ok && !closed {
		return s, nil // a listed name was validated when it was added
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if closed {
		return nil, fmt.Errorf("registry: %w", ErrClosed)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownStore, name)
}

// Names returns the store names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.stores))
	for n := range r.stores {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DataDir returns the absolute data directory.
func (r *Registry) DataDir() string { return r.cfg.DataDir }

// Close closes every store (waiting for their iterators and operations)
// and releases the data directory.
func (r *Registry) Close() error { return r.CloseContext(context.Background()) }

// CloseContext is Close bounded by ctx, for a shutdown. A store whose
// in-flight operations and open iterators have not finished when ctx ends
// is left open, serving as before (closing a *pebble.DB under a running
// operation panics), and so is a store whose open is being retried at
// that moment; the error names them. The data directory stays locked
// while any store is left open. Close or CloseContext may be called again
// later to close what was left; once everything is closed, they return nil.
func (r *Registry) CloseContext(ctx context.Context) error {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return nil
	}
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	stores := make([]*Store, 0, len(r.stores))
	for _, s := range r.stores {
		stores = append(stores, s)
	}
	r.mu.Unlock()
	slices.SortFunc(stores, func(a, b *Store) int { return strings.Compare(a.name, b.name) })

	// In parallel: every store gets the whole of ctx to drain.
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.closeContext(ctx)
		}()
	}
	wg.Wait()
	var left []string
	for i, s := range stores {
		if st, _ := s.State(); st != StateClosed {
			left = append(left, s.name)
			if errs[i] == nil {
				errs[i] = fmt.Errorf("store %s: still %s", s.name, st)
			}
		}
	}

	retried := make(chan struct{})
	go func() { r.retries.Wait(); close(retried) }()
	select {
	case <-retried:
	case <-ctx.Done():
		select {
		case <-retried:
		default:
			r.mu.RLock()
			for _, s := range stores {
				if s.retrying && !slices.Contains(left, s.name) {
					left = append(left, s.name)
					errs = append(errs, fmt.Errorf("store %s: its open is being retried: %w", s.name, context.Cause(ctx)))
				}
			}
			r.mu.RUnlock()
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("registry close: stores left open: %s: %w", strings.Join(left, ", "), errors.Join(errs...))
	}
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
	r.release()
	return errors.Join(errs...)
}

func (r *Registry) pebbleOptions(name string) *pebble.Options {
	var opts *pebble.Options
	if r.cfg.PebbleOptions != nil {
		opts = r.cfg.PebbleOptions(name)
	}
	if opts == nil {
		opts = &pebble.Options{}
	} else {
		opts = opts.Clone()
	}
	if opts.FS == nil {
		opts.FS = r.storeFS
	}
	if opts.Logger == nil {
		opts.Logger = pebbleLogger{r.log.With("store", name)}
	}
	if r.cfg.Ship {
		// Keeps obsolete WALs (and turns WAL recycling off, so none is
		// overwritten) for the commit log; TrimLog removes them.
		opts.Cleaner = pebble.ArchiveCleaner{}
	}
	return opts
}

// Shipping reports whether the registry keeps its stores' commit logs
// (Config.Ship).
func (r *Registry) Shipping() bool { return r.cfg.Ship }

// notify runs the hooks for one event of a store: OnCorrupt's for a
// corruption report, then OnStateChange's for a change of state.
func (r *Registry) notify(name string, e stateEvent) {
	r.listenMu.Lock()
	var corrupt []func(string, error)
	var changed []func(string, State, error)
	if e.corrupt {
		for _, fn := range r.listeners {
			corrupt = append(corrupt, fn)
		}
	}
	if e.changed {
		for _, fn := range r.stateListeners {
			changed = append(changed, fn)
		}
	}
	r.listenMu.Unlock()
	if e.corrupt {
		if r.cfg.OnCorrupt != nil {
			r.cfg.OnCorrupt(name, e.cause)
		}
		for _, fn := range corrupt {
			fn(name, e.cause)
		}
	}
	if e.changed {
		if r.cfg.OnStateChange != nil {
			r.cfg.OnStateChange(name, e.state, e.cause)
		}
		for _, fn := range changed {
			fn(name, e.state, e.cause)
		}
	}
}

// lockInstance takes an exclusive, non-blocking flock on path. The lock
// goes away with the process, so a crash never leaves a stale lock.
func lockInstance(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: open instance lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked (holder: %s)", ErrDataDirLocked, filepath.Dir(filepath.Dir(path)), holderString(holder))
		}
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+" on "+host+"\n"), 0)
	return f, nil
}

func holderString(b []byte) string {
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "unknown"
}

// release gives back what the registry holds for its life: the data
// directory's instance lock and the disk-health watcher.
func (r *Registry) release() {
	if r.lock != nil {
		_ = syscall.Flock(int(r.lock.Fd()), syscall.LOCK_UN)
		_ = r.lock.Close()
		r.lock = nil
	}
	_ = r.storeFSEnd.Close()
}

// diskSlowThreshold is Pebble's own: a disk operation slower than this is
// logged (diskSlow).
const diskSlowThreshold = 5 * time.Second

// diskSlow logs a disk operation on a store's files slower than
// diskSlowThreshold (Pebble's default listener logs it the same way).
func (r *Registry) diskSlow(info vfs.DiskSlowInfo) {
	r.log.Warn("slow disk operation", "path", info.Path, "op", info.OpType.String(), "took", info.Duration.Round(time.Millisecond))
}

// pebbleLogger sends Pebble's log lines to slog. Pebble calls Fatalf on a
// MANIFEST or WAL write error and expects it not to return. A store's open
// probes the disk before Pebble writes anything (opencheck.go), so a
// restart on a failing disk finds the store unavailable instead of coming
// back here.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "source", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "source", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error("fatal: "+fmt.Sprintf(format, args...), "source", "pebble")
	os.Exit(1)
}
