package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"storekeeper/internal/durable"
)

// Adopt creates store name in this registry from backup m of it, made on
// another machine (the one that held the store is gone): open reads each
// of the backup's files, from a backup target (see package offsite). The
// backup is imported into the local backup directory (ImportBackup),
// staged and verified as a restore's copy is, moved into place by one
// rename and opened; only then is the store listed, so nobody sees it half
// made, and a crash leaves at most a staged copy, which the next Open
// removes.
//
// key names this adoption (the caller's job id). Run again with the same
// key once it was made, Adopt changes nothing and returns the store with
// the restore it made, Replayed. A store that is here for any other reason
// (listed, being adopted, or a directory of that name in the data
// directory) is ErrStoreExists: adopting over it would replace its data.
// A store that was adopted but does not open is listed anyway, corrupt or
// unavailable like any other, and the error says so.
func (r *Registry) Adopt(ctx context.Context, name, key string, m BackupManifest, open func(context.Context, BackupFile) (io.ReadCloser, error)) (*Store, RestoreResult, error) {
	start := time.Now()
	var res RestoreResult
	if err := ValidateName(name); err != nil {
		return nil, res, err
	}
	if key == "" {
		return nil, res, fmt.Errorf("store: Adopt needs a key")
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, res, fmt.Errorf("registry: %w", ErrClosed)
	}
	if s, ok := r.stores[name]; ok {
		r.mu.Unlock()
		if done, ok, err := s.RestoredWith(key); err != nil || ok {
			return s, done, err
		}
		return nil, res, fmt.Errorf("adopt %s: %w", name, ErrStoreExists)
	}
	if r.adopting[name] {
		r.mu.Unlock()
		return nil, res, fmt.Errorf("adopt %s: %w (an adoption of it is running)", name, ErrStoreExists)
	}
	if r.adopting == nil {
		r.adopting = map[string]bool{}
	}
	r.adopting[name] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.adopting, name)
		r.mu.Unlock()
	}()

	live := filepath.Join(r.cfg.DataDir, name)
	if _, err := os.Lstat(live); err == nil || !isNotExist(err) {
		return nil, res, fmt.Errorf("adopt %s: %w: %s is there (%v)", name, ErrStoreExists, live, err)
	}
	s := &Store{
		name:  name,
		dir:   live,
		reg:   r,
		log:   r.log.With("store", name),
		state: stateNew,
		guard: guard{path: filepath.Join(r.meta, "guard", name+".json")},
	}
	s.opts = r.pebbleOptions(name)
	s.opts.EnsureDefaults()

	progress(ctx, "fetching", 0, m.Bytes)
	info, err := s.ImportBackup(ctx, m, open) // checks m names this store
	if err != nil {
		return nil, res, err
	}
	res.BackupID, res.BackupAt = info.ID, info.CreatedAt
	if err := r.preflight("adopt", r.cfg.DataDir, uint64(info.Bytes)); err != nil {
		return nil, res, err
	}
	paths, err := s.backupPaths()
	if err != nil {
		return nil, res, err
	}
	staged := r.stagedPath(name)
	if err := os.MkdirAll(filepath.Dir(staged), 0o755); err != nil {
		return nil, res, err
	}
	moved := false
	defer func() {
		if !moved {
			_ = os.RemoveAll(staged)
		}
	}()
	t := time.Now()
	var ct copyTiming
	progress(ctx, "staging", 0, info.Bytes)
	err = s.stage(ctx, paths, info.BackupManifest, staged, &ct)
	res.Timing.Hash, res.Timing.Sync, res.Timing.Stage = ct.Hash, ct.Sync, time.Since(t)
	if err != nil {
		return nil, res, fmt.Errorf("adopt %s: %w", name, err)
	}
	t = time.Now()
	progress(ctx, "verifying", 0, 0)
	if err := s.verifyStaged(staged); err != nil {
		return nil, res, fmt.Errorf("adopt %s: %w", name, err)
	}
	res.Timing.Verify = time.Since(t)

	// The key before the rename: an adoption that crashes after the rename
	// is found made by its retry (the directory is listed at the next
	// start); one that crashes before it leaves no store, and its retry
	// writes the key again.
	last := lastRestore{Key: key, BackupID: info.ID, BackupAt: info.CreatedAt, At: time.Now().UTC()}
	if err := os.MkdirAll(filepath.Dir(r.restoredPath(name)), 0o755); err != nil {
		return nil, res, err
	}
	if err := writeJSONAtomic(r.dataFS(), r.restoredPath(name), last); err != nil {
		return nil, res, err
	}
	t = time.Now()
	progress(ctx, "swapping", 0, 0)
	if err := os.Rename(staged, live); err != nil {
		return nil, res, fmt.Errorf("adopt %s: move the staged copy into place: %w", name, err)
	}
	moved = true
	for _, d := range []string{r.cfg.DataDir, filepath.Dir(staged)} {
		if err := durable.SyncDir(r.dataFS(), d); err != nil {
			return nil, res, fmt.Errorf("adopt %s: %w", name, err)
		}
	}
	res.Timing.Swap = time.Since(t)

	t = time.Now()
	progress(ctx, "opening", 0, 0)
	openErr := s.open()
	res.Timing.Reopen = time.Since(t)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = s.Close()
		return nil, res, fmt.Errorf("adopt %s: made, but the registry closed meanwhile: %w", name, ErrClosed)
	}
	r.stores[name] = s
	r.mu.Unlock()
	res.Took = time.Since(start)
	if st, cause := s.State(); st != StateOpen {
		if cause == nil {
			cause = openErr
		}
		return s, res, fmt.Errorf("adopt %s: the adopted store is %s: %w", name, st, cause)
	}
	s.log.Info("store adopted", "backup", info.ID, "backup_at", info.CreatedAt, "took", res.Took)
	return s, res, nil
}
