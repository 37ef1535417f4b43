package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sync/errgroup"

	"storekeeper/internal/durable"
)

// Layout of <backup-dir>/<store>/:
//
//	objects/<sha256>      one copy of every sstable content, shared by backups
//	backups/<id>/         a published backup: a Pebble directory (sstables as
//	                      hard links into objects/, the rest private copies)
//	                      plus backupManifestName
//	staging/<id>/         a backup being built; removed at start
//	trash/<id>/           a backup being pruned; removed at start
//	status/<id>.json      verification results, kept beside the immutable backup
//	hashcache.json        (dev, inode, size, mtime) of checkpointed files -> sha256
const (
	backupManifestName = "STOREKEEPER-BACKUP.json"
	hashCacheName      = "hashcache.json"
)

// BackupFile is one file of a backup.
type BackupFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Shared files (sstables) are hard links to objects/<sha256>; the others
	// (MANIFEST, OPTIONS, WAL, markers) are private copies, since Pebble may
	// append to or recycle them.
	Shared bool `json:"shared,omitempty"`
	// Fingerprint of the file's entries (sstables) or records (WAL); see
	// fingerprint.go. Empty for other files and in backups made before
	// fingerprints.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// BackupManifest describes a published backup. It is written last, and the
// backup is published by one rename, so a listed backup is complete.
type BackupManifest struct {
	ID            string       `json:"id"`
	Store         string       `json:"store"`
	CreatedAt     time.Time    `json:"created_at"`
	FormatVersion uint64       `json:"format_version"` // Pebble's FormatMajorVersion
	Keys          uint64       `json:"keys"`           // estimated from table properties
	Bytes         int64        `json:"bytes"`          // all files
	NewBytes      int64        `json:"new_bytes"`      // bytes this backup copied; the rest was shared
	Files         []BackupFile `json:"files"`
	// Fingerprint combines the files' fingerprints: what a drill
	// recomputes from the files it restores. Empty in backups made before
	// fingerprints.
	Fingerprint string `json:"fingerprint,omitempty"`
	// With Config.Ship: the timeline the backup was taken on, a sequence
	// number through which it holds every batch (LogSeq: replaying the
	// commit log from the next one onward reaches any later point), and a
	// time no batch it holds was committed after (LogAt: the backup can
	// serve a restore to any point from LogAt on). Batches between LogSeq
	// and LogAt may be in it too; replaying them again changes nothing,
	// as every write a handle offers (set, delete, range delete) leaves a
	// key as its last write says.
	Timeline string    `json:"timeline,omitempty"`
	LogSeq   uint64    `json:"log_seq,omitempty"`
	LogAt    time.Time `json:"log_at,omitzero"`
}

// BackupInfo is a backup as listed: its manifest and what later checks said.
type BackupInfo struct {
	BackupManifest
	VerifiedAt time.Time `json:"verified_at"`
	Bad        bool      `json:"bad,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// backupStatus is kept in status/<id>.json.
type backupStatus struct {
	VerifiedAt time.Time `json:"verified_at"`
	Bad        bool      `json:"bad,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// Retention says which backups pruning keeps: the newest Last, plus the
// newest of each UTC day for the last Daily days, plus, when the store
// ships its log and Window is set, what a restore to any moment within
// Window needs (windowPins).
type Retention struct {
	Last  int // default 7
	Daily int // default 7
	// Window is how far back a store can be restored to a moment
	// (--pitr-window); 0: no backup is kept for it.
	Window time.Duration
}

func (r Retention) withDefaults() Retention {
	if r.Last == 0 {
		r.Last = 7
	}
	if r.Daily == 0 {
		r.Daily = 7
	}
	return r
}

// backupPaths are a store's places in the backup directory.
type backupPaths struct{ root string }

func (p backupPaths) objects() string          { return filepath.Join(p.root, "objects") }
func (p backupPaths) object(sum string) string { return filepath.Join(p.root, "objects", sum) }
func (p backupPaths) backups() string          { return filepath.Join(p.root, "backups") }
func (p backupPaths) backup(id string) string  { return filepath.Join(p.root, "backups", id) }
func (p backupPaths) staging(id string) string { return filepath.Join(p.root, "staging", id) }
func (p backupPaths) trash(id string) string   { return filepath.Join(p.root, "trash", id) }
func (p backupPaths) status(id string) string  { return filepath.Join(p.root, "status", id+".json") }
func (p backupPaths) hashCache() string        { return filepath.Join(p.root, hashCacheName) }
func (p backupPaths) dirs() []string {
	return []string{p.objects(), p.backups(), filepath.Join(p.root, "staging"), filepath.Join(p.root, "trash"), filepath.Join(p.root, "status")}
}

func (s *Store) backupPaths() (backupPaths, error) {
	if s.reg.cfg.BackupDir == "" {
		return backupPaths{}, ErrNoBackupDir
	}
	return backupPaths{root: filepath.Join(s.reg.cfg.BackupDir, s.name)}, nil
}

// newBackupID returns a time-sortable id: UTC time to the millisecond and
// a random suffix.
func newBackupID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

// validBackupID guards paths built from ids that came from outside.
func validBackupID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return id[0] != '.'
}

// BackupResult reports a backup and where its time went.
type BackupResult struct {
	Backup BackupInfo    `json:"backup"`
	Copied int           `json:"copied"` // files copied; the rest were shared
	Shared int           `json:"shared"`
	Reread int           `json:"reread"` // shared, but read to learn so: the hash cache did not know them
	Pruned []string      `json:"pruned,omitempty"`
	Timing BackupTiming  `json:"timing"`
	Took   time.Duration `json:"took"`
}

// BackupTiming breaks a backup's time down.
type BackupTiming struct {
	Checkpoint time.Duration `json:"checkpoint"`
	Copy       time.Duration `json:"copy"`      // copying new files, hash and fsync included
	Hash       time.Duration `json:"hash"`      // of Copy: inside SHA-256
	FileSync   time.Duration `json:"file_sync"` // of Copy: fsync of the copied files
	Validate   time.Duration `json:"validate"`  // block checksums (during Copy, summed over copiers), then a read-only open
	Publish    time.Duration `json:"publish"`   // manifest, directory fsyncs, rename
}

// Backup takes a verified, content-addressed backup of the store and
// prunes old ones by the retention policy. See backupPaths for the layout.
// A crash at any point leaves no listed partial backup; Open removes the
// garbage.
func (s *Store) Backup(ctx context.Context) (BackupResult, error) {
	start := time.Now()
	var res BackupResult
	paths, err := s.backupPaths()
	if err != nil {
		return res, err
	}
	s.maint.Lock()
	defer s.maint.Unlock()
	bfs := s.reg.backupFS
	for _, d := range paths.dirs() {
		if err := bfs.MkdirAll(d, 0o755); err != nil {
			return res, fmt.Errorf("backup %s: %w", s.name, err)
		}
	}

	t := time.Now()
	progress(ctx, "checkpoint", 0, 0)
	timeline, logSeq := s.LastCommitted()
	ckpt, err := s.checkpoint(ctx, "backup")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(ckpt)
	res.Timing.Checkpoint = time.Since(t)
	crashPoint("backup.checkpointed")

	id := newBackupID(start)
	m := BackupManifest{ID: id, Store: s.name, CreatedAt: start.UTC()}
	if s.reg.cfg.Ship {
		m.Timeline, m.LogSeq, m.LogAt = timeline, logSeq, time.Now().UTC()
	}
	entries, err := s.opts.FS.List(ckpt)
	if err != nil {
		return res, err
	}
	slices.Sort(entries)
	var ct copyTiming
	cache := loadHashCache(bfs, paths.hashCache())
	newCache := hashCache{}

	// Decide per file: shared sstable already held, sstable to copy into
	// objects/, or private file to copy. Preflight on what must be copied.
	type plan struct {
		file   BackupFile
		src    string
		cached bool
	}
	var plans []plan
	var need uint64
	for _, name := range entries {
		src := filepath.Join(ckpt, name)
		info, err := s.opts.FS.Stat(src)
		if err != nil {
			return res, err
		}
		if info.IsDir() {
			continue
		}
		p := plan{file: BackupFile{Name: name, Size: info.Size(), Shared: strings.HasSuffix(name, ".sst")}, src: src}
		if p.file.Shared {
			if sum, fp, ok := cache.lookup(cacheKey(src)); ok {
				if _, err := bfs.Stat(paths.object(sum)); err == nil {
					p.file.SHA256, p.file.Fingerprint, p.cached = sum, fp, true
				}
			}
		}
		if !p.cached {
			need += uint64(p.file.Size)
		}
		plans = append(plans, p)
	}
	if err := s.reg.preflight("backup", paths.root, need); err != nil {
		return res, err
	}

	staging := paths.staging(id)
	if err := bfs.MkdirAll(staging, 0o755); err != nil {
		return res, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = bfs.RemoveAll(staging)
		}
	}()
	// Copy what the cache does not know, several files at a time (see
	// fileCopiers). Sstables go into objects/ under a temporary name
	// first, and each has its block checksums validated by its copier as
	// soon as it is written, while the other copiers wait on the disk.
	t = time.Now()
	var copied, total int64
	for _, p := range plans {
		if !p.cached {
			total += p.file.Size
		}
	}
	progress(ctx, "copying", 0, total)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fileCopiers)
	var validating time.Duration
	for i := range plans {
		p := &plans[i]
		if p.cached {
			if p.file.Fingerprint == "" {
				// Cached by a version before fingerprints: read the
				// object once to learn it.
				g.Go(func() error {
					fp, err := fingerprintTable(s.opts, bfs, paths.object(p.file.SHA256))
					if err != nil {
						return fmt.Errorf("backup %s: %w: %s: %w", s.name, ErrBadBackup, p.file.Name, err)
					}
					p.file.Fingerprint = fp.String()
					return nil
				})
			}
			continue
		}
		dst := filepath.Join(staging, p.file.Name)
		if p.file.Shared {
			dst = paths.object("tmp-" + id + "-" + p.file.Name)
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			var pt copyTiming
			sum, n, err := copyHashed(s.opts.FS, p.src, bfs, dst, &pt)
			if err != nil {
				return fmt.Errorf("backup %s: %w", s.name, err)
			}
			p.file.SHA256, p.file.Size = sum, n
			// Reading every entry back through Pebble checks the blocks'
			// checksums and fingerprints the table (or WAL) in one pass.
			vt := time.Now()
			fp, has, err := fingerprintFile(s.opts, bfs, dst)
			if err != nil {
				return fmt.Errorf("backup %s: %w: %s: %w", s.name, ErrBadBackup, p.file.Name, err)
			}
			if has {
				p.file.Fingerprint = fp.String()
			}
			took := time.Since(vt)
			mu.Lock()
			validating += took
			ct.add(pt)
			copied += n
			progress(ctx, "copying", copied, total)
			mu.Unlock()
			return nil
		})
	}
	err = g.Wait()
	res.Timing.Copy = time.Since(t)
	if err != nil {
		return res, err
	}
	// Name new objects by their hash (unless an identical one is held),
	// link the sstables into the backup, and list every file.
	for i := range plans {
		p := &plans[i]
		dst := filepath.Join(staging, p.file.Name)
		switch {
		case p.cached:
			res.Shared++
		case p.file.Shared:
			tmp := paths.object("tmp-" + id + "-" + p.file.Name)
			if _, err := bfs.Stat(paths.object(p.file.SHA256)); err == nil {
				_ = bfs.Remove(tmp)
				res.Shared++
				res.Reread++
				break
			}
			if err := bfs.Rename(tmp, paths.object(p.file.SHA256)); err != nil {
				return res, err
			}
			m.NewBytes += p.file.Size
			res.Copied++
		default:
			m.NewBytes += p.file.Size
			res.Copied++
		}
		if p.file.Shared {
			newCache[cacheKey(p.src)] = p.file.SHA256 + " " + p.file.Fingerprint
			if err := bfs.Link(paths.object(p.file.SHA256), dst); err != nil {
				return res, fmt.Errorf("backup %s: link %s: %w", s.name, p.file.Name, err)
			}
		}
		m.Bytes += p.file.Size
		m.Files = append(m.Files, p.file)
	}
	if m.Fingerprint, err = combineFingerprints(m.Files); err != nil {
		return res, err
	}
	crashPoint("backup.copied")

	// The new sstables' block checksums were checked as they were copied
	// (shared ones when first copied; VerifyBackup rereads all); now check
	// that Pebble opens the whole backup read-only.
	t = time.Now()
	progress(ctx, "validating", 0, 0)
	m.FormatVersion, m.Keys, err = inspectReadOnly(s.opts, bfs, staging)
	if err != nil {
		return res, fmt.Errorf("backup %s: %w: %w", s.name, ErrBadBackup, err)
	}
	res.Timing.Validate = validating + time.Since(t)
	crashPoint("backup.validated")

	t = time.Now()
	progress(ctx, "publishing", 0, 0)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return res, err
	}
	if err := durable.WriteFileSync(bfs, filepath.Join(staging, backupManifestName), b); err != nil {
		return res, err
	}
	for _, d := range []string{staging, paths.objects()} {
		if err := durable.SyncDir(bfs, d); err != nil {
			return res, err
		}
	}
	crashPoint("backup.manifest-written")
	if err := bfs.Rename(staging, paths.backup(id)); err != nil {
		return res, fmt.Errorf("backup %s: publish: %w", s.name, err)
	}
	ok = true
	crashPoint("backup.renamed")
	if err := durable.SyncDir(bfs, paths.backups()); err != nil {
		return res, err
	}
	res.Timing.Publish = time.Since(t)
	res.Timing.Hash, res.Timing.FileSync = ct.Hash, ct.Sync
	crashPoint("backup.published")
	now := time.Now().UTC()
	_ = s.writeBackupStatus(paths, id, backupStatus{VerifiedAt: now})
	if err := saveHashCache(bfs, paths.hashCache(), newCache); err != nil {
		s.log.Warn("backup hash cache not saved; the next backup rereads files", "err", err)
	}
	res.Backup = BackupInfo{BackupManifest: m, VerifiedAt: now}
	res.Pruned, err = s.prune(paths, id)
	if err != nil {
		s.log.Warn("pruning backups failed", "err", err)
	}
	crashPoint("backup.pruned")
	res.Took = time.Since(start)
	s.log.Info("backup published", "backup", id, "files", len(m.Files), "copied", res.Copied, "new_bytes", m.NewBytes, "took", res.Took)
	return res, nil
}

// inspectReadOnly opens dir read-only and returns its format version and
// the key estimate from table properties.
func inspectReadOnly(opts *pebble.Options, fs vfs.FS, dir string) (uint64, uint64, error) {
	ro := opts.Clone()
	ro.ReadOnly = true
	ro.FS = fs
	ro.EventListener = &pebble.EventListener{}
	db, err := pebble.Open(dir, ro)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	levels, err := db.SSTables(pebble.WithProperties())
	if err != nil {
		return 0, 0, err
	}
	return uint64(db.FormatMajorVersion()), estimateKeys(levels), nil
}

// cacheKey identifies an immutable file by device, inode, size and mtime.
// Checkpoints hard-link sstables, so an unchanged table has the same key in
// every backup. An empty key (no stat) never hits.
func cacheKey(path string) string {
	info, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d:%d", st.Dev, st.Ino, info.Size(), info.ModTime().UnixNano())
}

// hashCache maps a checkpointed file's cacheKey to "sha256 fingerprint"
// (a cache written before fingerprints has the hash alone).
type hashCache map[string]string

func (c hashCache) lookup(key string) (sum, fp string, ok bool) {
	v, ok := c[key]
	if !ok {
		return "", "", false
	}
	sum, fp, _ = strings.Cut(v, " ")
	return sum, fp, true
}

func loadHashCache(fs vfs.FS, path string) hashCache {
	m := hashCache{}
	if b, err := readFile(fs, path); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	delete(m, "")
	return m
}

func saveHashCache(fs vfs.FS, path string, m hashCache) error {
	delete(m, "")
	return writeJSONAtomic(fs, path, m)
}

// readManifest reads and checks a published backup's manifest.
func readManifest(fs vfs.FS, dir, store, id string) (BackupManifest, error) {
	var m BackupManifest
	b, err := readFile(fs, filepath.Join(dir, backupManifestName))
	if err != nil {
		if isNotExist(err) {
			return m, fmt.Errorf("%w %s: no manifest", ErrBadBackup, id)
		}
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w %s: malformed manifest: %v", ErrBadBackup, id, err)
	}
	return m, checkManifest(m, store, id)
}

// Backups lists the store's complete backups, newest first. A backup
// directory whose manifest is missing or malformed is not listed.
func (s *Store) Backups() ([]BackupInfo, error) {
	paths, err := s.backupPaths()
	if err != nil {
		return nil, err
	}
	ids, err := s.reg.backupFS.List(paths.backups())
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	s.listed.keepOnly(ids)
	var out []BackupInfo
	for _, id := range ids {
		info, err := s.listBackup(paths, id)
		if err != nil {
			s.log.Warn("backup not listed", "backup", id, "err", err)
			continue
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b BackupInfo) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}

func (s *Store) backupInfo(paths backupPaths, id string) (BackupInfo, error) {
	if !validBackupID(id) {
		return BackupInfo{}, fmt.Errorf("%w %q", ErrUnknownBackup, id)
	}
	dir := paths.backup(id)
	if _, err := s.reg.backupFS.Stat(dir); err != nil {
		if isNotExist(err) {
			return BackupInfo{}, fmt.Errorf("%w %q of store %s", ErrUnknownBackup, id, s.name)
		}
		return BackupInfo{}, err
	}
	m, err := readManifest(s.reg.backupFS, dir, s.name, id)
	if err != nil {
		return BackupInfo{}, err
	}
	info := BackupInfo{BackupManifest: m}
	var st backupStatus
	if b, err := readFile(s.reg.backupFS, paths.status(id)); err == nil && json.Unmarshal(b, &st) == nil {
		info.VerifiedAt, info.Bad, info.Error = st.VerifiedAt, st.Bad, st.Error
	}
	return info, nil
}

// prune removes the backups the retention policy does not keep (never
// keep), then the objects no remaining backup uses. A pruned backup is
// first renamed into trash/, so a crash never leaves a listed backup with
// files missing.
func (s *Store) prune(paths backupPaths, keep string) ([]string, error) {
	all, err := s.Backups()
	if err != nil {
		return nil, err
	}
	keepSet := retain(all, s.reg.cfg.Retention, time.Now())
	keepSet[keep] = true
	pins, err := s.windowPins(all, time.Now())
	if err != nil {
		return nil, fmt.Errorf("not pruned: %w", err)
	}
	for id := range pins {
		keepSet[id] = true
	}
	bfs := s.reg.backupFS
	var pruned []string
	used := map[string]bool{}
	for _, b := range all {
		if keepSet[b.ID] {
			for _, f := range b.Files {
				if f.Shared {
					used[f.SHA256] = true
				}
			}
			continue
		}
		if err := bfs.Rename(paths.backup(b.ID), paths.trash(b.ID)); err != nil {
			return pruned, err
		}
		_ = bfs.RemoveAll(paths.trash(b.ID))
		_ = bfs.Remove(paths.status(b.ID))
		s.listed.forget(b.ID)
		pruned = append(pruned, b.ID)
	}
	if err := durable.SyncDir(bfs, paths.backups()); err != nil {
		return pruned, err
	}
	// Objects are only collected when every backup directory could be
	// read: a backup skipped for a bad manifest may still use them.
	ids, err := bfs.List(paths.backups())
	if err != nil || len(ids) != len(all)-len(pruned) {
		return pruned, err
	}
	objs, err := bfs.List(paths.objects())
	if err != nil {
		return pruned, err
	}
	for _, o := range objs {
		if !used[o] && !strings.HasPrefix(o, "tmp-") {
			_ = bfs.Remove(paths.object(o))
		}
	}
	return pruned, nil
}

// retain returns the ids the policy keeps from backups sorted newest first.
// Keep applies the store's retention to backups made at times (newest
// first, keyed by id), as pruning its local backups does: the ids kept.
// Copies elsewhere (backup targets) are pruned by the same rule.
func (s *Store) Keep(created map[string]time.Time, now time.Time) map[string]bool {
	backups := make([]BackupInfo, 0, len(created))
	for id, at := range created {
		backups = append(backups, BackupInfo{BackupManifest: BackupManifest{ID: id, CreatedAt: at}})
	}
	slices.SortFunc(backups, func(a, b BackupInfo) int { return b.CreatedAt.Compare(a.CreatedAt) })
	keep := retain(backups, s.reg.cfg.Retention, now)
	local, err := s.Backups()
	var pins map[string]bool
	if err == nil {
		pins, err = s.windowPins(local, now)
	}
	if err != nil {
		// What the window needs is not known: keep everything this time.
		for id := range created {
			keep[id] = true
		}
		return keep
	}
	for id := range pins {
		if _, ok := created[id]; ok {
			keep[id] = true
		}
	}
	return keep
}

// windowPins are the backups a restore to a moment within the PITR
// window needs besides the newest ones: for each timeline with a moment
// in it (the current one and those restores replaced, Timeline.Earlier),
// the newest of its backups (among local) holding nothing after the
// window's start or the timeline's, whichever is later; or, when it has
// none, the backup the timeline was branched from. A restore to a moment
// reads one of these and the shipped log after it (ship's collection
// keeps that log for the window).
func (s *Store) windowPins(local []BackupInfo, now time.Time) (map[string]bool, error) {
	w := s.reg.cfg.Retention.Window
	if !s.reg.cfg.Ship || w <= 0 {
		return nil, nil
	}
	tl, err := s.Timeline()
	if err != nil {
		return nil, err
	}
	start := now.Add(-w)
	spans := []EarlierTimeline{{ID: tl.ID, Created: tl.Created, Ended: now, Backup: tl.root()}}
	spans = append(spans, tl.Earlier...)
	pins := map[string]bool{}
	for _, sp := range spans {
		if sp.Ended.Before(start) {
			continue // no moment of it is in the window
		}
		from := sp.Created
		if from.Before(start) {
			from = start
		}
		var anchor *BackupInfo
		for i := range local {
			b := &local[i]
			if !b.Bad && b.Timeline == sp.ID && !b.LogAt.IsZero() && !b.LogAt.After(from) && (anchor == nil || b.LogAt.After(anchor.LogAt)) {
				anchor = b
			}
		}
		switch {
		case anchor != nil:
			pins[anchor.ID] = true
		case sp.Backup != "":
			pins[sp.Backup] = true
		}
	}
	return pins, nil
}

func retain(backups []BackupInfo, r Retention, now time.Time) map[string]bool {
	keep := map[string]bool{}
	for i, b := range backups {
		if i < r.Last {
			keep[b.ID] = true
		}
	}
	oldest := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -(r.Daily - 1))
	seen := map[string]bool{}
	for _, b := range backups {
		day := b.CreatedAt.UTC().Format("2006-01-02")
		if !b.CreatedAt.Before(oldest) && !seen[day] {
			seen[day] = true
			keep[b.ID] = true
		}
	}
	return keep
}

// cleanBackupGarbage removes what interrupted backups and prunes left:
// staging/, trash/ and temporary objects. Open calls it, holding the
// instance lock, before any backup can run.
func (r *Registry) cleanBackupGarbage() error {
	stores, err := r.backupFS.List(r.cfg.BackupDir)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	for _, name := range stores {
		if ValidateName(name) != nil {
			continue
		}
		p := backupPaths{root: filepath.Join(r.cfg.BackupDir, name)}
		for _, sub := range []string{"staging", "trash"} {
			dir := filepath.Join(p.root, sub)
			entries, _ := r.backupFS.List(dir)
			for _, e := range entries {
				r.log.Info("removing an interrupted backup's leftovers", "store", name, "path", filepath.Join(dir, e))
				if err := r.backupFS.RemoveAll(filepath.Join(dir, e)); err != nil {
					return err
				}
			}
		}
		objs, _ := r.backupFS.List(p.objects())
		for _, o := range objs {
			if strings.HasPrefix(o, "tmp-") {
				_ = r.backupFS.Remove(p.object(o))
			}
		}
	}
	return nil
}

func readFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, info.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

// writeJSONAtomic replaces path with v's JSON (durable.WriteAtomic).
func writeJSONAtomic(fs vfs.FS, path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return durable.WriteAtomic(fs, path, b)
}

// BackupVerifyResult reports a backup verification.
type BackupVerifyResult struct {
	ID       string        `json:"id"`
	Files    int           `json:"files"`
	Bytes    int64         `json:"bytes"`
	Points   int64         `json:"points,omitempty"`
	Deep     bool          `json:"deep"`
	Duration time.Duration `json:"duration"`
}

// VerifyBackup rereads every file of a backup against its manifest (size
// and SHA-256) and checks the sstables' block checksums; deep also runs
// CheckLevels over the backup opened read-only. A damaged backup is marked
// bad (it is then never picked for a restore) and the error wraps
// ErrBadBackup; it never touches the live store.
func (s *Store) VerifyBackup(ctx context.Context, id string, opts VerifyOptions) (BackupVerifyResult, error) {
	start := time.Now()
	res := BackupVerifyResult{ID: id, Deep: opts.Deep}
	paths, err := s.backupPaths()
	if err != nil {
		return res, err
	}
	info, err := s.backupInfo(paths, id)
	if err != nil {
		return res, err
	}
	bfs := s.reg.backupFS
	dir := paths.backup(id)
	fail := func(err error) (BackupVerifyResult, error) {
		err = fmt.Errorf("%w %s: %w", ErrBadBackup, id, err)
		s.markBackupBad(paths, id, err)
		return res, fmt.Errorf("store %s: %w", s.name, err)
	}
	for _, f := range info.Files {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		path := filepath.Join(dir, f.Name)
		sum, n, err := hashFile(bfs, path)
		if err != nil {
			return fail(err)
		}
		if sum != f.SHA256 || n != f.Size {
			return fail(fmt.Errorf("%s has %d bytes with sha256 %s, manifest says %d bytes with %s", f.Name, n, sum, f.Size, f.SHA256))
		}
		if strings.HasSuffix(f.Name, ".sst") {
			if _, err := validateTable(s.opts, bfs, path); err != nil {
				return fail(fmt.Errorf("%s: %w", f.Name, err))
			}
		}
		res.Files++
		res.Bytes += n
	}
	if opts.Deep {
		ro := s.opts.Clone()
		ro.FS = bfs
		if res.Points, err = checkLevels(ro, dir); err != nil {
			return fail(err)
		}
	}
	res.Duration = time.Since(start)
	if err := s.writeBackupStatus(paths, id, backupStatus{VerifiedAt: time.Now().UTC()}); err != nil {
		return res, err
	}
	return res, nil
}
