package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sync/errgroup"

	"storekeeper/internal/durable"
)

// Moving backups between machines: a published backup's files are read
// out one by one (OpenBackupFile) and a backup made elsewhere is brought
// in (ImportBackup) and published here exactly as Backup publishes one,
// so that Restore then uses it like any other. What carries the files in
// between (object storage, see package offsite) is not the store's
// business.

// LookupBackup returns one published backup of the store; ErrBadBackup
// when it is not there.
func (s *Store) LookupBackup(id string) (BackupInfo, error) {
	paths, err := s.backupPaths()
	if err != nil {
		return BackupInfo{}, err
	}
	if !validBackupID(id) {
		return BackupInfo{}, fmt.Errorf("%w: %q is not a backup id", ErrBadBackup, id)
	}
	return s.backupInfo(paths, id)
}

// OpenBackupFile opens a file of a published backup for reading: one the
// backup's manifest lists.
func (s *Store) OpenBackupFile(id, name string) (io.ReadCloser, error) {
	b, err := s.LookupBackup(id)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(b.Files, func(f BackupFile) bool { return f.Name == name }) {
		return nil, fmt.Errorf("%w %s: no file %q", ErrBadBackup, id, name)
	}
	paths, _ := s.backupPaths()
	return s.reg.backupFS.Open(filepath.Join(paths.backup(id), name))
}

// ImportBackup publishes in this store's backup directory a backup made
// elsewhere (on another node, kept on object storage): every file m lists
// is read from open, checked against its size and SHA-256 as it is
// written, sstables into objects/ (one already held is not fetched), the
// rest into the backup; then Pebble must open the whole backup read-only,
// and the backup is published by one rename, as Backup does. A backup
// already published under m.ID is left as it is. Nothing half-fetched is
// ever listed: a failed import leaves only its staging directory, which
// the next start removes.
func (s *Store) ImportBackup(ctx context.Context, m BackupManifest, open func(context.Context, BackupFile) (io.ReadCloser, error)) (BackupInfo, error) {
	paths, err := s.backupPaths()
	if err != nil {
		return BackupInfo{}, err
	}
	if err := checkManifest(m, s.name, m.ID); err != nil {
		return BackupInfo{}, err
	}
	s.maint.Lock()
	defer s.maint.Unlock()
	bfs := s.reg.backupFS
	if b, err := s.backupInfo(paths, m.ID); err == nil {
		return b, nil
	}
	for _, d := range paths.dirs() {
		if err := bfs.MkdirAll(d, 0o755); err != nil {
			return BackupInfo{}, fmt.Errorf("import backup %s of %s: %w", m.ID, s.name, err)
		}
	}
	var need uint64
	for _, f := range m.Files {
		if _, err := bfs.Stat(paths.object(f.SHA256)); err != nil || !f.Shared {
			need += uint64(f.Size)
		}
	}
	if err := s.reg.preflight("import", paths.root, need); err != nil {
		return BackupInfo{}, err
	}
	staging := paths.staging(m.ID)
	_ = bfs.RemoveAll(staging)
	if err := bfs.MkdirAll(staging, 0o755); err != nil {
		return BackupInfo{}, err
	}
	published := false
	defer func() {
		if !published {
			_ = bfs.RemoveAll(staging)
		}
	}()
	// Fetch what is missing, sstables into objects/ under a temporary
	// name, then name and link.
	err = eachFile(ctx, m.Files, func(ctx context.Context, _ int, f BackupFile) error {
		dst := filepath.Join(staging, f.Name)
		if f.Shared {
			if _, err := bfs.Stat(paths.object(f.SHA256)); err == nil {
				return nil // held already: linked below
			}
			dst = paths.object("tmp-" + m.ID + "-" + f.Name)
		}
		if err := fetchChecked(ctx, bfs, dst, f, open); err != nil {
			return fmt.Errorf("import backup %s of %s: %w", m.ID, s.name, err)
		}
		return nil
	})
	if err != nil {
		return BackupInfo{}, err
	}
	for _, f := range m.Files {
		if !f.Shared {
			continue
		}
		obj := paths.object(f.SHA256)
		tmp := paths.object("tmp-" + m.ID + "-" + f.Name)
		if _, err := bfs.Stat(tmp); err == nil {
			if err := bfs.Rename(tmp, obj); err != nil {
				return BackupInfo{}, err
			}
		}
		if err := bfs.Link(obj, filepath.Join(staging, f.Name)); err != nil {
			return BackupInfo{}, fmt.Errorf("import backup %s of %s: link %s: %w", m.ID, s.name, f.Name, err)
		}
	}
	progress(ctx, "validating", 0, 0)
	if _, _, err := inspectReadOnly(s.opts, bfs, staging); err != nil {
		return BackupInfo{}, fmt.Errorf("import backup %s of %s: %w: %w", m.ID, s.name, ErrBadBackup, err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return BackupInfo{}, err
	}
	if err := durable.WriteFileSync(bfs, filepath.Join(staging, backupManifestName), b); err != nil {
		return BackupInfo{}, err
	}
	for _, d := range []string{staging, paths.objects()} {
		if err := durable.SyncDir(bfs, d); err != nil {
			return BackupInfo{}, err
		}
	}
	if err := bfs.Rename(staging, paths.backup(m.ID)); err != nil {
		return BackupInfo{}, fmt.Errorf("import backup %s of %s: publish: %w", m.ID, s.name, err)
	}
	published = true
	if err := durable.SyncDir(bfs, paths.backups()); err != nil {
		return BackupInfo{}, err
	}
	now := time.Now().UTC()
	_ = s.writeBackupStatus(paths, m.ID, backupStatus{VerifiedAt: now})
	s.log.Info("backup imported", "backup", m.ID, "files", len(m.Files), "bytes", m.Bytes)
	return BackupInfo{BackupManifest: m, VerifiedAt: now}, nil
}

// fetchChecked writes f, read from open, to path and syncs it; a size or
// hash that differs from f's is ErrBadBackup, and nothing is left.
func fetchChecked(ctx context.Context, fs vfs.FS, path string, f BackupFile, open func(context.Context, BackupFile) (io.ReadCloser, error)) (err error) {
	in, err := open(ctx, f)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	defer in.Close()
	out, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = fs.Remove(path)
		}
	}()
	h := sha256.New()
	// One byte more than the manifest says tells a longer file apart.
	n, err := io.CopyBuffer(io.MultiWriter(h, out), io.LimitReader(in, f.Size+1), make([]byte, copyBuf))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != f.Size || sum != f.SHA256 {
		return fmt.Errorf("%w: %s has %d bytes with sha256 %s, the manifest says %d bytes with %s", ErrBadBackup, f.Name, n, sum, f.Size, f.SHA256)
	}
	return out.Sync()
}

// eachFile runs fn on every file of a backup, several at a time (as Backup
// copies), reporting "fetching" progress by bytes as each one ends.
func eachFile(ctx context.Context, files []BackupFile, fn func(ctx context.Context, i int, f BackupFile) error) error {
	var total, done int64
	for _, f := range files {
		total += f.Size
	}
	progress(ctx, "fetching", 0, total)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fileCopiers)
	for i, f := range files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			if err := fn(gctx, i, f); err != nil {
				return err
			}
			mu.Lock()
			done += f.Size
			progress(ctx, "fetching", done, total)
			mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// checkManifest checks what a manifest says of itself: the backup and
// store it names, and file entries that are plain names with a hash.
func checkManifest(m BackupManifest, store, id string) error {
	if !validBackupID(id) {
		return fmt.Errorf("%w: %q is not a backup id", ErrBadBackup, id)
	}
	if m.ID != id || m.Store != store || len(m.Files) == 0 {
		return fmt.Errorf("%w %s: manifest names backup %q of store %q with %d files", ErrBadBackup, id, m.ID, m.Store, len(m.Files))
	}
	for _, f := range m.Files {
		if f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." || f.Name == backupManifestName || len(f.SHA256) != 64 || f.Size < 0 {
			return fmt.Errorf("%w %s: manifest lists a bad file entry %q", ErrBadBackup, id, f.Name)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return fmt.Errorf("%w %s: manifest lists a bad hash for %q", ErrBadBackup, id, f.Name)
		}
	}
	return nil
}
