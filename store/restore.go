package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"storekeeper/internal/durable"
)

// RestoreResult reports a restore. BackupAt is the rollback window: writes
// made after it are not in the restored store; the replaced generation is
// kept in Quarantine.
type RestoreResult struct {
	// Replayed: RestoreOnce found this key's restore already made and
	// changed nothing; the rest describes that restore (Timing and Took
	// are zero).
	Replayed   bool      `json:"replayed,omitempty"`
	BackupID   string    `json:"backup_id"`
	BackupAt   time.Time `json:"backup_at"`
	Quarantine string    `json:"quarantine,omitempty"` // empty when there was no live directory
	// Log is what was replayed from the commit log onto the backup
	// (RestoreWith with a Replay), and the timeline the restore started.
	Log    *ReplayResult `json:"log,omitempty"`
	Timing RestoreTiming `json:"timing"`
	Took   time.Duration `json:"took"`
}

// RestoreTiming breaks a restore's time down.
type RestoreTiming struct {
	Fence  time.Duration `json:"fence"`
	Stage  time.Duration `json:"stage"` // copy from the backup, hash and fsync included
	Hash   time.Duration `json:"hash"`  // of Stage: inside SHA-256
	Sync   time.Duration `json:"sync"`  // of Stage: fsync of the staged files
	Replay time.Duration `json:"replay,omitempty"`
	Verify time.Duration `json:"verify"`
	Swap   time.Duration `json:"swap"`
	Reopen time.Duration `json:"reopen"`
}

// Quarantine bounds the replaced generations kept after restores. The
// generation a restore just made is never removed by that restore.
type Quarantine struct {
	MaxCount int    // default 3 per store
	MaxBytes uint64 // per store; 0 = no byte bound
}

func (q Quarantine) withDefaults() Quarantine {
	if q.MaxCount == 0 {
		q.MaxCount = 3
	}
	return q
}

// restoreJournal is <data-dir>/.storekeeper/restore/<store>.json. It makes
// a restore resumable: before the swap it is rolled back, after it is
// finished.
type restoreJournal struct {
	Key       string    `json:"key,omitempty"` // RestoreOnce's key
	BackupID  string    `json:"backup_id"`
	BackupAt  time.Time `json:"backup_at"`
	Phase     string    `json:"phase"` // "stage", then "swap"
	StagedIno uint64    `json:"staged_ino,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// restoredPath holds the last keyed restore of a store (lastRestore),
// written when its swap is done.
func (r *Registry) restoredPath(name string) string {
	return filepath.Join(r.meta, "restored", name+".json")
}

// readJSON decodes the JSON file at path into v.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// lastRestore is what restoredPath holds: the key of the last restore made
// with one, and what it did.
type lastRestore struct {
	Key        string    `json:"key"`
	BackupID   string    `json:"backup_id"`
	BackupAt   time.Time `json:"backup_at"`
	Quarantine string    `json:"quarantine,omitempty"`
	At         time.Time `json:"at"`
}

func (r *Registry) journalPath(name string) string {
	return filepath.Join(r.meta, "restore", name+".json")
}
func (r *Registry) stagedPath(name string) string {
	return filepath.Join(r.meta, "restore", name+".staged")
}
func (r *Registry) quarantineDir(name string) string {
	return filepath.Join(r.meta, "quarantine", name)
}

// Restore replaces the store with a backup: backupID, or the newest one
// not marked bad when empty. Its check is integrity only: it refuses a
// backup marked bad and checks the one it uses on the way in (every file
// against the manifest's size and SHA-256, then an open of the staged
// copy); which backups may be restored beyond that is the caller's policy
// (storekeeper's worker always names the backup, chosen by
// jobs.BackupSummary.Usable). It fences the store (handles return
// ErrUnavailable, open iterators are waited for), stages a copy of the
// backup beside the live directory, verifies it, swaps it in atomically,
// keeps the replaced generation in quarantine and reopens. It works on a
// store that is corrupt or did not open. Run again after any interruption,
// it finishes or redoes the same restore. A disowned store refuses with
// ErrNotOwner. A restored store that cannot be opened for a reason other
// than damage is left unavailable, and the registry retries its open.
func (s *Store) Restore(ctx context.Context, backupID string) (RestoreResult, error) {
	return s.restore(ctx, restoreSource{id: backupID}, "")
}

// RestoreOnce is Restore made at most once per key (a caller's id for the
// restore, such as its job's): when the store's last restore with a key
// was made with this one, it changes nothing and returns that restore's
// result, Replayed. A caller that retries a restore whose outcome it lost
// (its process died, or it could not record it) so never rolls the store
// back a second time, over writes made since, and learns which rollback
// happened. The key is kept in the data directory, with the swap.
func (s *Store) RestoreOnce(ctx context.Context, key, backupID string) (RestoreResult, error) {
	if key == "" {
		return RestoreResult{}, errors.New("store: RestoreOnce needs a key")
	}
	return s.restore(ctx, restoreSource{id: backupID}, key)
}

// RestoreOnceFrom is RestoreOnce from a backup that is not in the local
// backup directory: m, whose files open reads (from a backup target, see
// package offsite). They are written straight into the staged copy, each
// checked against m's size and SHA-256 as it arrives, so the backup is
// fetched and written once; it is not kept among the local backups. A
// file that does not match is ErrBadBackup, naming it, and the live store
// is untouched.
func (s *Store) RestoreOnceFrom(ctx context.Context, key string, m BackupManifest, open func(context.Context, BackupFile) (io.ReadCloser, error)) (RestoreResult, error) {
	if key == "" {
		return RestoreResult{}, errors.New("store: RestoreOnceFrom needs a key")
	}
	if err := checkManifest(m, s.name, m.ID); err != nil {
		return RestoreResult{}, err
	}
	return s.restore(ctx, restoreSource{id: m.ID, m: &m, open: open}, key)
}

// restoreSource is what a restore restores: a local backup (id, or the
// newest usable when empty), or backup m read through open; then replay,
// when set, onto it.
type restoreSource struct {
	id     string
	m      *BackupManifest
	open   func(context.Context, BackupFile) (io.ReadCloser, error)
	replay *Replay
}

// RestoreRequest is a restore for RestoreWith.
type RestoreRequest struct {
	// Key makes the restore once-only, as RestoreOnce's key; empty: none.
	Key string
	// BackupID names a local backup (empty: the newest usable), unless
	// Manifest is set: a backup read through Open, as RestoreOnceFrom.
	BackupID string
	Manifest *BackupManifest
	Open     func(context.Context, BackupFile) (io.ReadCloser, error)
	// Replay, when set, is applied onto the staged copy of the backup
	// before it is verified and swapped in: a point-in-time restore.
	Replay *Replay
}

// Replay is what a point-in-time restore replays from the commit log.
type Replay struct {
	// Batches calls apply with each batch to replay, in sequence order,
	// and returns what it replayed (Through, LastWriteAt). Batches of LogData only
	// are skipped by apply.
	Batches func(ctx context.Context, apply func(LogBatch) error) (ReplayResult, error)
	// Branch is recorded as the parent of the timeline the restored store
	// starts; its Backup is the restored backup's ID.
	Branch Branch
}

// ReplayResult says what a point-in-time restore replayed.
type ReplayResult struct {
	At          time.Time `json:"at"`                     // the moment restored to (the Branch's)
	Batches     int       `json:"batches"`                // batches applied
	Writes      int       `json:"writes"`                 // their operations
	Through     uint64    `json:"through"`                // sequence number of the last write included (its timeline's)
	LastWriteAt time.Time `json:"last_write_at,omitzero"` // its commit time
	Timeline    string    `json:"timeline"`               // the timeline the restored store starts
}

// RestoreWith restores as req says; see Restore, RestoreOnce and
// RestoreOnceFrom.
func (s *Store) RestoreWith(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	src := restoreSource{id: req.BackupID, replay: req.Replay}
	if req.Manifest != nil {
		if err := checkManifest(*req.Manifest, s.name, req.Manifest.ID); err != nil {
			return RestoreResult{}, err
		}
		src.id, src.m, src.open = req.Manifest.ID, req.Manifest, req.Open
	}
	if req.Replay != nil && !s.reg.cfg.Ship {
		return RestoreResult{}, ErrNotShipping
	}
	return s.restore(ctx, src, req.Key)
}

// RestoredWith returns the result of the store's last restore when it was
// made with key (RestoreOnce), Replayed; ok false when it was not.
func (s *Store) RestoredWith(key string) (res RestoreResult, ok bool, err error) {
	var last lastRestore
	if err := readJSON(s.reg.restoredPath(s.name), &last); err != nil {
		if isNotExist(err) {
			return res, false, nil
		}
		return res, false, fmt.Errorf("store %s: read the last restore: %w", s.name, err)
	}
	if key == "" || last.Key != key {
		return res, false, nil
	}
	return RestoreResult{BackupID: last.BackupID, BackupAt: last.BackupAt, Quarantine: last.Quarantine, Replayed: true}, true, nil
}

func (s *Store) restore(ctx context.Context, src restoreSource, key string) (RestoreResult, error) {
	start := time.Now()
	var res RestoreResult
	if err := s.owned(); err != nil {
		return res, err
	}
	var paths backupPaths
	if src.m == nil {
		var err error
		if paths, err = s.backupPaths(); err != nil {
			return res, err
		}
	}
	s.maint.Lock()
	defer s.maint.Unlock()
	// A journal left by an earlier attempt in this process: settle it
	// first (it may be this key's restore, swapped but not finished).
	if err := s.reg.recoverRestore(s.name); err != nil {
		return res, err
	}
	if done, ok, err := s.RestoredWith(key); err != nil || ok {
		if err != nil {
			return done, err
		}
		// Made, but is the store open? A restored store that did not
		// open fails the restore (below), and so does its replay, saying
		// which rollback happened.
		if st, cause := s.State(); st != StateOpen {
			if cause == nil {
				cause = errors.New("no cause recorded")
			}
			return done, fmt.Errorf("restore %s: made before with this key (backup %s, writes after %s rolled back), but the store is %s: %w",
				s.name, done.BackupID, done.BackupAt.UTC().Format(time.RFC3339Nano), st, cause)
		}
		s.log.Info("restore already made with this key: nothing to do", "key", key, "backup", done.BackupID, "backup_at", done.BackupAt)
		return done, nil
	}
	info := BackupInfo{}
	if src.m != nil {
		info.BackupManifest = *src.m
	} else {
		var err error
		if info, err = s.pickBackup(paths, src.id); err != nil {
			return res, err
		}
	}
	res.BackupID, res.BackupAt = info.ID, info.CreatedAt
	if err := s.reg.preflight("restore", s.reg.meta, uint64(info.Bytes)); err != nil {
		return res, err
	}

	t := time.Now()
	progress(ctx, "fencing", 0, 0)
	db, err := s.fence(ctx, StateRestoring)
	if err != nil {
		return res, err
	}
	if db != nil {
		if err := db.Close(); err != nil {
			s.log.Warn("closing the store for restore", "err", err)
		}
	}
	res.Timing.Fence = time.Since(t)
	crashPoint("restore.fenced")
	swapped := false
	defer func() {
		if swapped {
			return
		}
		// Failed before the swap: the live directory is untouched. Drop the
		// staged copy and reopen what was there.
		_ = os.RemoveAll(s.reg.stagedPath(s.name))
		_ = os.Remove(s.reg.journalPath(s.name))
		if err := s.open(); err != nil {
			s.log.Error("reopening after a failed restore", "err", err)
		}
	}()

	j := restoreJournal{Key: key, BackupID: info.ID, BackupAt: info.CreatedAt, Phase: "stage", StartedAt: start.UTC()}
	if err := s.reg.writeJournal(s.name, j); err != nil {
		return res, err
	}
	crashPoint("restore.journaled")

	t = time.Now()
	staged := s.reg.stagedPath(s.name)
	var ct copyTiming
	progress(ctx, "staging", 0, info.Bytes)
	if src.m != nil {
		err = s.stageFrom(ctx, info.BackupManifest, staged, src.open)
	} else {
		err = s.stage(ctx, paths, info.BackupManifest, staged, &ct)
	}
	res.Timing.Hash, res.Timing.Sync = ct.Hash, ct.Sync
	if err != nil {
		return res, err
	}
	res.Timing.Stage = time.Since(t)
	crashPoint("restore.staged")

	if src.replay != nil {
		t = time.Now()
		progress(ctx, "replaying", 0, 0)
		rr, err := s.replayOnto(ctx, staged, src.replay)
		if err != nil {
			return res, err
		}
		res.Log = &rr
		res.Timing.Replay = time.Since(t)
		crashPoint("restore.replayed")
	}

	t = time.Now()
	progress(ctx, "verifying", 0, 0)
	if err := s.verifyStaged(staged); err != nil {
		return res, err
	}
	res.Timing.Verify = time.Since(t)
	crashPoint("restore.verified")
	if s.reg.cfg.Ship {
		// The restored store starts a timeline of its own: its sequence
		// numbers are not the replaced store's.
		br := Branch{Timeline: info.Timeline, Backup: info.ID}
		if src.replay != nil {
			br = src.replay.Branch
			br.Backup = info.ID
		}
		tl := newTimeline(s.name, &br)
		if cur, err := s.Timeline(); err == nil {
			tl = cur.followedBy(tl, tl.Created)
		} else {
			// Pruning keeps only the new timeline's backups for the window.
			s.log.Warn("restore: the replaced timeline is not known; backups a restore to a moment on it needs may be pruned", "err", err)
		}
		if err := writeTimeline(staged, tl); err != nil {
			return res, fmt.Errorf("restore %s: timeline: %w", s.name, err)
		}
		if res.Log != nil {
			res.Log.Timeline = tl.ID
		}
	}

	t = time.Now()
	fi, err := os.Stat(staged)
	if err != nil {
		return res, err
	}
	j.Phase, j.StagedIno = "swap", fi.Sys().(*syscall.Stat_t).Ino
	if err := s.reg.writeJournal(s.name, j); err != nil {
		return res, err
	}
	crashPoint("restore.swap-journaled")
	progress(ctx, "swapping", 0, 0)
	swapped = true
	if res.Quarantine, err = s.reg.finishSwap(s.name, j); err != nil {
		// The journal stays: the next Open or Restore finishes the swap.
		s.mu.Lock()
		s.cause = fmt.Errorf("restore of %s interrupted: %w", info.ID, err)
		s.mu.Unlock()
		return res, fmt.Errorf("restore %s: swap: %w", s.name, err)
	}
	res.Timing.Swap = time.Since(t)

	t = time.Now()
	progress(ctx, "reopening", 0, 0)
	if err := s.open(); err != nil {
		return res, fmt.Errorf("restore %s: restored store did not open: %w", s.name, err)
	}
	if st, cause := s.State(); st != StateOpen {
		return res, fmt.Errorf("restore %s: restored store did not open: %w", s.name, cause)
	}
	res.Timing.Reopen = time.Since(t)
	crashPoint("restore.reopened")
	s.reg.pruneQuarantine(s.name, res.Quarantine)
	res.Took = time.Since(start)
	s.log.Info("store restored", "backup", info.ID, "backup_at", info.CreatedAt, "quarantine", res.Quarantine, "took", res.Took)
	return res, nil
}

// pickBackup returns the named backup, or the newest one not marked bad:
// integrity only, see Restore.
func (s *Store) pickBackup(paths backupPaths, id string) (BackupInfo, error) {
	if id != "" {
		info, err := s.backupInfo(paths, id)
		if err != nil {
			return info, err
		}
		if info.Bad {
			return info, fmt.Errorf("%w %s: %s", ErrBadBackup, id, info.Error)
		}
		return info, nil
	}
	all, err := s.Backups()
	if err != nil {
		return BackupInfo{}, err
	}
	for _, b := range all {
		if !b.Bad {
			return b, nil
		}
	}
	return BackupInfo{}, fmt.Errorf("store %s: %w", s.name, ErrNoBackup)
}

// stage copies the backup's files into staged, checking each against the
// manifest's size and hash, and syncs them.
func (s *Store) stage(ctx context.Context, paths backupPaths, m BackupManifest, staged string, ct *copyTiming) error {
	fs := s.opts.FS
	if err := fs.RemoveAll(staged); err != nil {
		return err
	}
	if err := fs.MkdirAll(staged, 0o755); err != nil {
		return err
	}
	src := paths.backup(m.ID)
	var mu sync.Mutex
	var done, total int64
	for _, f := range m.Files {
		total += f.Size
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fileCopiers)
	for _, f := range m.Files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			var pt copyTiming
			sum, n, err := copyHashed(s.reg.backupFS, filepath.Join(src, f.Name), fs, filepath.Join(staged, f.Name), &pt)
			mu.Lock()
			ct.add(pt)
			done += n
			progress(ctx, "staging", done, total)
			mu.Unlock()
			if err != nil {
				if isNotExist(err) {
					err = fmt.Errorf("%w %s: file %s is missing: %w", ErrBadBackup, m.ID, f.Name, err)
					s.markBackupBad(paths, m.ID, err)
				}
				return fmt.Errorf("restore %s: %w", s.name, err)
			}
			if sum != f.SHA256 || n != f.Size {
				err := fmt.Errorf("%w %s: %s has %d bytes with sha256 %s, manifest says %d bytes with %s",
					ErrBadBackup, m.ID, f.Name, n, sum, f.Size, f.SHA256)
				s.markBackupBad(paths, m.ID, err)
				return fmt.Errorf("restore %s: %w", s.name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return durable.SyncDir(fs, staged)
}

// stageFrom writes the backup's files, read from open, into staged,
// checking each against the manifest's size and hash, and syncs them.
func (s *Store) stageFrom(ctx context.Context, m BackupManifest, staged string, open func(context.Context, BackupFile) (io.ReadCloser, error)) error {
	fs := s.opts.FS
	if err := fs.RemoveAll(staged); err != nil {
		return err
	}
	if err := fs.MkdirAll(staged, 0o755); err != nil {
		return err
	}
	err := eachFile(ctx, m.Files, func(ctx context.Context, _ int, f BackupFile) error {
		if err := fetchChecked(ctx, fs, filepath.Join(staged, f.Name), f, open); err != nil {
			return fmt.Errorf("restore %s from backup %s: %w", s.name, m.ID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return durable.SyncDir(fs, staged)
}

// verifyStaged checks that Pebble opens the staged store. Its bytes were
// already proven identical to the backup's by SHA-256 while staging, and
// every sstable of a backup had its block checksums validated when it was
// first copied into the backup directory; rereading them here would add
// the time of a verification without adding evidence (VerifyBackup does
// that, on demand, against the backup itself).
func (s *Store) verifyStaged(staged string) error {
	if _, _, err := inspectReadOnly(s.opts, s.opts.FS, staged); err != nil {
		return fmt.Errorf("restore %s: staged copy does not open: %w: %w", s.name, ErrBadBackup, err)
	}
	return nil
}

func (s *Store) markBackupBad(paths backupPaths, id string, cause error) {
	st := backupStatus{Bad: true, Error: cause.Error()}
	if err := s.writeBackupStatus(paths, id, st); err != nil {
		s.log.Warn("could not mark backup bad", "backup", id, "err", err)
	}
	s.log.Error("backup is bad", "backup", id, "err", cause)
}

// finishSwap completes a journal in phase "swap": it swaps the staged copy
// in unless that already happened (the live directory then has the staged
// inode), moves the replaced generation to quarantine, drops the guard
// record of the old generation, and removes the journal. It returns the
// quarantine path.
func (r *Registry) finishSwap(name string, j restoreJournal) (string, error) {
	live := filepath.Join(r.cfg.DataDir, name)
	staged := r.stagedPath(name)
	liveInfo, liveErr := os.Stat(live)
	done := liveErr == nil && liveInfo.Sys().(*syscall.Stat_t).Ino == j.StagedIno
	if !done {
		if _, err := os.Stat(staged); err != nil {
			return "", fmt.Errorf("staged copy is gone and the swap did not happen: %w", err)
		}
		var err error
		if liveErr == nil {
			err = exchange(staged, live)
		} else {
			err = os.Rename(staged, live)
		}
		if err != nil {
			return "", err
		}
	}
	crashPoint("restore.swapped")
	for _, d := range []string{r.cfg.DataDir, filepath.Dir(staged)} {
		if err := durable.SyncDir(r.dataFS(), d); err != nil {
			return "", err
		}
	}
	// The guard's record describes the replaced generation.
	if err := os.Remove(filepath.Join(r.meta, "guard", name+".json")); err != nil && !isNotExist(err) {
		return "", err
	}
	quarantine := ""
	if _, err := os.Stat(staged); err == nil {
		qdir := r.quarantineDir(name)
		if err := os.MkdirAll(qdir, 0o755); err != nil {
			return "", err
		}
		quarantine = filepath.Join(qdir, time.Now().UTC().Format("20060102T150405.000Z")+"-before-"+j.BackupID)
		if err := os.Rename(staged, quarantine); err != nil {
			return "", err
		}
		if err := durable.SyncDir(r.dataFS(), qdir); err != nil {
			return "", err
		}
	}
	crashPoint("restore.quarantined")
	if j.Key != "" {
		// Before the journal goes: a restore settled from its journal
		// (after a crash) records its key too.
		last := lastRestore{Key: j.Key, BackupID: j.BackupID, BackupAt: j.BackupAt, Quarantine: quarantine, At: time.Now().UTC()}
		if err := os.MkdirAll(filepath.Dir(r.restoredPath(name)), 0o755); err != nil {
			return quarantine, err
		}
		if err := writeJSONAtomic(r.dataFS(), r.restoredPath(name), last); err != nil {
			return quarantine, err
		}
	}
	if err := os.Remove(r.journalPath(name)); err != nil && !isNotExist(err) {
		return quarantine, err
	}
	return quarantine, durable.SyncDir(r.dataFS(), filepath.Dir(r.journalPath(name)))
}

// recoverRestore settles a journal left by an interrupted restore: before
// the swap it is rolled back (the live directory was never touched), from
// the swap on it is finished.
func (r *Registry) recoverRestore(name string) error {
	b, err := os.ReadFile(r.journalPath(name))
	if isNotExist(err) {
		// No journal: a staged copy without one is garbage.
		return os.RemoveAll(r.stagedPath(name))
	}
	if err != nil {
		return err
	}
	var j restoreJournal
	if err := json.Unmarshal(b, &j); err != nil || (j.Phase != "stage" && j.Phase != "swap") {
		// A torn journal can only come from its first write (later writes
		// replace it atomically), so the swap cannot have begun.
		r.log.Warn("restore journal unreadable; rolling back", "store", name, "err", err)
		j.Phase = "stage"
	}
	if j.Phase == "stage" {
		r.log.Info("rolling back an interrupted restore", "store", name, "backup", j.BackupID)
		if err := os.RemoveAll(r.stagedPath(name)); err != nil {
			return err
		}
		return os.Remove(r.journalPath(name))
	}
	r.log.Info("finishing an interrupted restore", "store", name, "backup", j.BackupID)
	q, err := r.finishSwap(name, j)
	if err != nil {
		return fmt.Errorf("store %s: finishing interrupted restore of %s: %w", name, j.BackupID, err)
	}
	r.pruneQuarantine(name, q)
	return nil
}

func (r *Registry) writeJournal(name string, j restoreJournal) error {
	path := r.journalPath(name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := writeJSONAtomic(r.dataFS(), path, j); err != nil {
		return err
	}
	return durable.SyncDir(r.dataFS(), filepath.Dir(path))
}

// pruneQuarantine keeps at most MaxCount generations (and MaxBytes) per
// store, oldest removed first, never keep.
func (r *Registry) pruneQuarantine(name, keep string) {
	dir := r.quarantineDir(name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var gens []string
	for _, e := range entries {
		gens = append(gens, filepath.Join(dir, e.Name()))
	}
	slices.SortFunc(gens, func(a, b string) int { return strings.Compare(b, a) }) // newest first
	q := r.cfg.Quarantine
	var total uint64
	kept := 0
	for _, g := range gens {
		size := dirSize(g)
		if g != keep && (kept >= q.MaxCount || (q.MaxBytes > 0 && total+size > q.MaxBytes)) {
			r.log.Info("removing an old quarantined generation", "store", name, "path", g)
			_ = os.RemoveAll(g)
			continue
		}
		kept++
		total += size
	}
}

// Quarantined lists the store's quarantined generations, newest first.
func (s *Store) Quarantined() []string {
	entries, _ := os.ReadDir(s.reg.quarantineDir(s.name))
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(s.reg.quarantineDir(s.name), e.Name()))
	}
	slices.Reverse(out)
	return out
}
