package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is; the typed errors below
// carry detail and match the sentinel they refine.
var (
	// ErrInvalidName: a store name that does not match NamePattern.
	ErrInvalidName = errors.New("invalid store name")
	// ErrUnknownStore: no store of that name in the registry.
	ErrUnknownStore = errors.New("unknown store")
	// ErrStoreExists: Registry.Adopt found the store here already (or
	// being adopted): adopting over it would replace its data.
	ErrStoreExists = errors.New("store already exists here")
	// ErrUnavailable: the store is fenced (a restore is running) or did not
	// open: it is corrupt, or unavailable (StateUnavailable: an I/O error,
	// a full disk, …, named in the error); try again later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrClosed: the store or registry has been closed.
	ErrClosed = errors.New("store closed")
	// ErrCorrupt: the store's data is damaged. CorruptionError refines it.
	ErrCorrupt = errors.New("store corrupt")
	// ErrNotFound: Get found no value for the key.
	ErrNotFound = errors.New("key not found")
	// ErrDataDirLocked: another process holds the data directory.
	ErrDataDirLocked = errors.New("data directory in use by another process")
	// ErrNoSpace: a preflight found too little free disk. SpaceError refines it.
	ErrNoSpace = errors.New("not enough free disk space")
	// ErrNotOwner: the store was disowned (Store.Disown): this process no
	// longer holds it, so writes, compactions and restores are refused.
	// The error also carries the cause given to Disown.
	ErrNotOwner = errors.New("store not owned by this process")
)

// Backup and restore errors.
var (
	// ErrUnknownBackup: no complete backup with that id.
	ErrUnknownBackup = errors.New("unknown backup")
	// ErrNoBackup: the store has no usable backup.
	ErrNoBackup = errors.New("no backup")
	// ErrBadBackup: the backup is incomplete, malformed or damaged.
	ErrBadBackup = errors.New("bad backup")
	// ErrNoBackupDir: the registry was opened without a backup directory.
	ErrNoBackupDir = errors.New("no backup directory configured")
)

// CorruptionError says which store is damaged and, where known, which file.
type CorruptionError struct {
	Store string
	File  string // path of the damaged file, empty when unknown
	Err   error  // the evidence
}

func (e *CorruptionError) Error() string {
	if e.File != "" {
		return fmt.Sprintf("store %s corrupt: %s: %v", e.Store, e.File, e.Err)
	}
	return fmt.Sprintf("store %s corrupt: %v", e.Store, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// SpaceError reports a free-space preflight that failed: nothing was touched.
type SpaceError struct {
	Op   string // "compact", "backup", "restore", "open"
	Path string // the filesystem that was checked
	Need uint64 // bytes the operation needs
	Free uint64 // bytes available to this process
}

func (e *SpaceError) Error() string {
	return fmt.Sprintf("%s needs %d bytes free on %s, %d available", e.Op, e.Need, e.Path, e.Free)
}

// Is makes errors.Is(err, ErrNoSpace) true.
func (e *SpaceError) Is(target error) bool { return target == ErrNoSpace }
