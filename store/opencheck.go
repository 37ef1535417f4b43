package store

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Opening a store decides between three outcomes, and only evidence makes
// a store corrupt, because the worker restores a corrupt store from its
// last backup, losing every write since:
//
//   - corrupt: Pebble's own corruption errors (pebble.IsCorruptionError),
//     a table the MANIFEST lists that is missing or has another size on
//     disk (checkTables), a MANIFEST that the marker names and that is
//     missing, and a rolled-back MANIFEST (guard);
//   - unavailable: anything else (EIO, EMFILE, ENOSPC, EACCES, EROFS, …),
//     with the error as the cause. The files may be intact; the registry
//     retries the open;
//   - open.
//
// Every check runs before Pebble's read-write open, and so do a write
// probe and a free-space check, because of what Pebble v2.1.7 does when it
// cannot write during that open (measured): it writes a new MANIFEST at
// once, and a failed MANIFEST write calls Logger.Fatalf, which
// storekeeper's exits the process on; when table writes fail too (a full
// disk) and the WAL has writes to replay, it retries the flush of the
// replayed WAL forever and the open never returns. Without the checks a
// restart while the disk is full would exit, or hang, again and again.

// probeName is the file the write probe creates, and removes, in a store
// directory. Pebble ignores files it does not know.
const probeName = "STOREKEEPER-WRITE-PROBE"

// probeSize is the size of the write probe: one filesystem block.
const probeSize = 4096

// openSlack is the free space a read-write open needs beyond its WAL
// replay and new MANIFEST: the OPTIONS file and markers.
const openSlack = 64 << 10

// openDB runs the checks and opens the database read-write. Damage is
// returned as a CorruptionError; any other error means unavailable.
func (s *Store) openDB(opts *pebble.Options) (*pebble.DB, error) {
	fs := opts.FS
	rec, err := s.guard.load()
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", s.name, err)
	}
	desc, peekErr := pebble.Peek(s.dir, fs)
	switch {
	case peekErr != nil && isNotExist(peekErr):
		desc = &pebble.DBDesc{} // no directory yet: a new store
	case peekErr != nil:
		return nil, fmt.Errorf("open store %s: inspect: %w", s.name, peekErr)
	}
	if desc.Exists {
		view, err := s.inspect(opts, desc)
		if err != nil {
			return nil, err
		}
		if err := s.guard.check(s.name, rec, view, desc.ManifestFilename); err != nil {
			return nil, err
		}
	} else if peekErr == nil && rec != nil && len(rec.Tables) > 0 {
		// The directory is there but its MANIFEST marker is gone: a
		// read-write open would create an empty store over the tables.
		return nil, &CorruptionError{Store: s.name, Err: fmt.Errorf("store files are gone: %d sstables were recorded", len(rec.Tables))}
	}
	if err := s.preflightWrite(opts, desc); err != nil {
		return nil, err
	}
	db, err := pebble.Open(s.dir, opts)
	if err != nil {
		if cerr := classifyOpenError(s.name, err); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("open store %s: %w", s.name, err)
	}
	if err := s.guard.reset(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: record file set: %w", s.name, err)
	}
	return db, nil
}

// preflightWrite checks, before Pebble's read-write open writes anything,
// that it can: the write probe, then room for what the open writes. A
// read-only open (an embedder's choice) writes nothing and is not checked.
func (s *Store) preflightWrite(opts *pebble.Options, desc *pebble.DBDesc) error {
	if opts.ReadOnly {
		return nil
	}
	fs := opts.FS
	if !desc.Exists {
		// A new store: the probe needs its directory (Pebble would make it).
		if err := fs.MkdirAll(s.dir, 0o755); err != nil {
			return fmt.Errorf("open store %s: %w", s.name, err)
		}
	}
	if err := probeWrite(fs, s.dir); err != nil {
		return fmt.Errorf("open store %s: %w", s.name, err)
	}
	if desc.Exists {
		if err := openSpace(fs, s.dir, desc.ManifestFilename); err != nil {
			return fmt.Errorf("open store %s: %w", s.name, err)
		}
	}
	return nil
}

// inspect opens the store read-only, without Pebble's consistency check
// (which reports a missing or mis-sized table as an untyped error), and
// checks its tables itself. It returns the live table numbers, sorted, for
// the guard; a CorruptionError for damage; other errors as they are.
func (s *Store) inspect(opts *pebble.Options, desc *pebble.DBDesc) ([]uint64, error) {
	fs := opts.FS
	if _, err := fs.Stat(desc.ManifestFilename); err != nil {
		if isNotExist(err) {
			return nil, &CorruptionError{Store: s.name, File: desc.ManifestFilename,
				Err: fmt.Errorf("the MANIFEST the marker names is missing: %w", err)}
		}
		return nil, fmt.Errorf("open store %s: inspect MANIFEST: %w", s.name, err)
	}
	ro := opts.Clone()
	ro.ReadOnly = true
	ro.DisableConsistencyCheck = true
	ro.EventListener = &pebble.EventListener{}
	db, err := pebble.Open(s.dir, ro)
	if err != nil {
		if cerr := classifyOpenError(s.name, err); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("open store %s: read-only open: %w", s.name, err)
	}
	defer db.Close()
	tables := versionTables(db)
	view := make([]uint64, 0, len(tables))
	for _, t := range tables {
		view = append(view, t.num)
	}
	slices.Sort(view)
	return view, checkTables(s.name, fs, s.dir, tables)
}

// versionTable is one table of the version a MANIFEST describes: its
// number, its backing file and the backing file's size the MANIFEST
// records.
type versionTable struct {
	level       int
	num         uint64
	backing     uint64
	backingSize uint64
}

// versionTables lists the tables of db's current version. DB.SSTables
// cannot be used: it fails as a whole on the first table whose file is
// missing, before anything says which. DebugCurrentVersion is what
// Pebble's own consistency check reads.
func versionTables(db *pebble.DB) []versionTable {
	var out []versionTable
	v := db.DebugCurrentVersion()
	for level := range v.Levels {
		for t := range v.Levels[level].All() {
			out = append(out, versionTable{
				level:       level,
				num:         uint64(t.TableNum),
				backing:     uint64(t.TableBacking.DiskFileNum),
				backingSize: t.TableBacking.Size,
			})
		}
	}
	return out
}

// checkTables checks that every table file exists with the size the
// MANIFEST records, opening each through fs as Pebble will. A file that
// does not exist (ENOENT) or has another size is damage. Any other error
// (EIO, EMFILE, EACCES, …) says nothing about the file and wins over
// damage found in others: an unavailable store is retried, a corrupt one
// is restored, and a restore must never rest on a disk that misbehaves.
// Stores are local: remote tables are not supported by storekeeper.
func checkTables(name string, fs vfs.FS, dir string, tables []versionTable) error {
	var damage []string
	var first string
	var ioErr error
	seen := map[uint64]bool{}
	for _, t := range tables {
		if seen[t.backing] {
			continue
		}
		seen[t.backing] = true
		path := fs.PathJoin(dir, fmt.Sprintf("%06d.sst", t.backing))
		size, err := openedSize(fs, path)
		switch {
		case err != nil && isNotExist(err):
			damage = append(damage, fmt.Sprintf("L%d: %06d.sst is missing", t.level, t.backing))
		case err != nil:
			if ioErr == nil {
				ioErr = fmt.Errorf("open store %s: check table %s: %w", name, path, err)
			}
			continue
		case uint64(size) != t.backingSize:
			damage = append(damage, fmt.Sprintf("L%d: %06d.sst has %d bytes, the MANIFEST records %d", t.level, t.backing, size, t.backingSize))
		default:
			continue
		}
		if first == "" {
			first = path
		}
	}
	if ioErr != nil {
		return ioErr
	}
	if len(damage) > 0 {
		return &CorruptionError{Store: name, File: first,
			Err: fmt.Errorf("%d of %d tables missing or mis-sized: %s", len(damage), len(seen), strings.Join(damage, "; "))}
	}
	return nil
}

// openedSize opens path and returns its size from the open file.
func openedSize(fs vfs.FS, path string) (int64, error) {
	f, err := fs.Open(path)
	if err != nil {
		return 0, err
	}
	info, err := f.Stat()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return info.Size(), nil
}

// probeWrite creates a small file in dir, writes and syncs it, and
// removes it, all through fs: a full disk, a read-only or failing
// filesystem or a permission shows here, before Pebble writes anything.
func probeWrite(fs vfs.FS, dir string) error {
	path := fs.PathJoin(dir, probeName)
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("write probe: %w", err)
	}
	_, err = f.Write(make([]byte, probeSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := fs.Remove(path); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		_ = fs.Remove(path)
		return fmt.Errorf("write probe %s: %w", path, err)
	}
	return nil
}

// openSpace fails with a SpaceError when dir's filesystem has less room
// than a read-write open can write: the WAL files, which it replays and
// flushes to a table (an upper bound: recycled WALs count too), a new
// MANIFEST, no bigger than the current one, and openSlack. A filesystem
// that cannot tell its usage is not checked.
func openSpace(fs vfs.FS, dir, manifest string) error {
	usage, err := fs.GetDiskUsage(dir)
	if err != nil {
		return nil
	}
	need := uint64(openSlack)
	if info, err := fs.Stat(manifest); err == nil {
		need += uint64(info.Size())
	}
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".log") {
			if info, err := fs.Stat(fs.PathJoin(dir, n)); err == nil {
				need += uint64(info.Size())
			}
		}
	}
	if usage.AvailBytes < need {
		return &SpaceError{Op: "open", Path: dir, Need: need, Free: usage.AvailBytes}
	}
	return nil
}
