package worker

import (
	"context"
	"io"
	"time"

	"storekeeper/store"
)

// Stores is what a worker needs of the stores its node owns: the seam
// between the worker and package store. A *store.Registry provides it
// (Config.Registry); make scale's synthetic nodes give a fake whose jobs
// take a simulated time (Config.Stores), so that a thousand nodes of a
// hundred stores each speak the worker's whole Redis protocol from one
// process without a hundred thousand Pebble databases.
type Stores interface {
	// Names lists the stores, sorted.
	Names() []string
	// Store returns a store's handle, or store.ErrUnknownStore.
	Store(name string) (Handle, error)
	// OnCorrupt and OnStateChange register the worker's callbacks and
	// return their removal (store.Registry's).
	OnCorrupt(fn func(name string, err error)) (remove func())
	OnStateChange(fn func(name string, st store.State, cause error)) (remove func())
	// Adopt makes a store from a backup on a target (store.Registry.Adopt).
	Adopt(ctx context.Context, name, key string, m store.BackupManifest, open func(context.Context, store.BackupFile) (io.ReadCloser, error)) (Handle, store.RestoreResult, error)
}

// Handle is what a worker does with one store: *store.Store's methods
// that jobs, leases and status publishing use.
type Handle interface {
	Name() string
	Dir() string
	State() (store.State, error)
	Stats() store.Stats
	Own()
	Disown(cause error)
	Compact(ctx context.Context, opts store.CompactOptions) (store.CompactResult, error)
	Backup(ctx context.Context) (store.BackupResult, error)
	Backups() ([]store.BackupInfo, error)
	LookupBackup(id string) (store.BackupInfo, error)
	OpenBackupFile(id, name string) (io.ReadCloser, error)
	Keep(created map[string]time.Time, now time.Time) map[string]bool
	Verify(ctx context.Context, opts store.VerifyOptions) (store.VerifyResult, error)
	VerifyBackup(ctx context.Context, id string, opts store.VerifyOptions) (store.BackupVerifyResult, error)
	RestoreOnce(ctx context.Context, key, backupID string) (store.RestoreResult, error)
	RestoreOnceFrom(ctx context.Context, key string, m store.BackupManifest, open func(context.Context, store.BackupFile) (io.ReadCloser, error)) (store.RestoreResult, error)
	RestoredWith(key string) (store.RestoreResult, bool, error)
	Drill(ctx context.Context, m store.BackupManifest, open func(context.Context, store.BackupFile) (io.ReadCloser, error)) (store.DrillReport, error)
}

var _ Handle = (*store.Store)(nil)

// registryStores is a *store.Registry as Stores.
type registryStores struct{ r *store.Registry }

func (s registryStores) Names() []string { return s.r.Names() }

func (s registryStores) Store(name string) (Handle, error) {
	st, err := s.r.Store(name)
	if err != nil {
		return nil, err // not a nil *store.Store in a non-nil Handle
	}
	return st, nil
}

func (s registryStores) OnCorrupt(fn func(string, error)) func() { return s.r.OnCorrupt(fn) }

func (s registryStores) OnStateChange(fn func(string, store.State, error)) func() {
	return s.r.OnStateChange(fn)
}

func (s registryStores) Adopt(ctx context.Context, name, key string, m store.BackupManifest, open func(context.Context, store.BackupFile) (io.ReadCloser, error)) (Handle, store.RestoreResult, error) {
	st, res, err := s.r.Adopt(ctx, name, key, m, open)
	if st == nil {
		return nil, res, err
	}
	return st, res, err
}
