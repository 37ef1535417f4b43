// Package fakestores is a worker.Stores of stores that hold no data: each
// job takes a simulated time and then succeeds, with the figures a small
// store would give. make scale runs a thousand worker nodes of a hundred
// stores each on them, speaking the worker's whole Redis protocol (leases,
// heartbeats and published statuses, schedules, job lifecycles, events,
// history) without a hundred thousand Pebble databases. Restores,
// adoptions and drills are refused: they need data.
package fakestores

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"storekeeper/store"
	"storekeeper/worker"
)

// ErrFake is what the jobs that need data (restore, adopt, drill, reading
// a backup's file) return.
var ErrFake = errors.New("fake store: it holds no data")

// keepBackups is how many backups a fake store lists, newest first.
const keepBackups = 3

// Stores is a worker.Stores of fake stores.
type Stores struct {
	names  []string
	byName map[string]*Handle
}

var _ worker.Stores = (*Stores)(nil)

// New returns the stores names, whose compactions, backups and
// verifications each take took.
func New(names []string, took time.Duration) *Stores {
	s := &Stores{names: slices.Sorted(slices.Values(names)), byName: map[string]*Handle{}}
	for _, n := range names {
		s.byName[n] = &Handle{name: n, took: took, disk: 64 << 20}
	}
	return s
}

// Names lists the stores, sorted.
func (s *Stores) Names() []string { return slices.Clone(s.names) }

// Store returns a store, or store.ErrUnknownStore.
func (s *Stores) Store(name string) (worker.Handle, error) {
	h, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", store.ErrUnknownStore, name)
	}
	return h, nil
}

// OnCorrupt registers nothing: a fake store is never corrupt.
func (s *Stores) OnCorrupt(func(string, error)) func() { return func() {} }

// OnStateChange registers nothing: a fake store stays open.
func (s *Stores) OnStateChange(func(string, store.State, error)) func() { return func() {} }

// Adopt is refused.
func (s *Stores) Adopt(context.Context, string, string, store.BackupManifest, func(context.Context, store.BackupFile) (io.ReadCloser, error)) (worker.Handle, store.RestoreResult, error) {
	return nil, store.RestoreResult{}, ErrFake
}

// Handle is one fake store.
type Handle struct {
	name string
	took time.Duration

	mu                        sync.Mutex
	disk                      uint64
	backups                   []store.BackupInfo // newest first
	lastCompaction, lastCheck time.Time
}

func (h *Handle) Name() string                { return h.name }
func (h *Handle) Dir() string                 { return "" }
func (h *Handle) State() (store.State, error) { return store.StateOpen, nil }
func (h *Handle) Own()                        {}
func (h *Handle) Disown(error)                {}

// Stats are a small open store's.
func (h *Handle) Stats() store.Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return store.Stats{Name: h.name, State: store.StateOpen, DiskBytes: h.disk, LiveBytes: h.disk, EstimatedKeys: h.disk / 100,
		StatsComplete: true, LastCompaction: h.lastCompaction, LastVerify: h.lastCheck}
}

// work takes the simulated time, or less if ctx ends first.
func (h *Handle) work(ctx context.Context) error {
	t := time.NewTimer(h.took)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (h *Handle) Compact(ctx context.Context, _ store.CompactOptions) (store.CompactResult, error) {
	if err := h.work(ctx); err != nil {
		return store.CompactResult{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastCompaction = time.Now()
	return store.CompactResult{Outcome: store.Compacted, BytesBefore: h.disk, BytesAfter: h.disk, Duration: h.took}, nil
}

func (h *Handle) Backup(ctx context.Context) (store.BackupResult, error) {
	if err := h.work(ctx); err != nil {
		return store.BackupResult{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now().UTC()
	b := store.BackupInfo{BackupManifest: store.BackupManifest{ID: now.Format("20060102T150405.000000000Z"), Store: h.name, CreatedAt: now,
		Keys: h.disk / 100, Bytes: int64(h.disk)}, VerifiedAt: now}
	h.backups = append([]store.BackupInfo{b}, h.backups...)
	var pruned []string
	for _, old := range h.backups[min(keepBackups, len(h.backups)):] {
		pruned = append(pruned, old.ID)
	}
	h.backups = h.backups[:min(keepBackups, len(h.backups))]
	return store.BackupResult{Backup: b, Copied: 1, Pruned: pruned, Took: h.took}, nil
}

func (h *Handle) Backups() ([]store.BackupInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.backups), nil
}

func (h *Handle) LookupBackup(id string) (store.BackupInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.backups {
		if b.ID == id {
			return b, nil
		}
	}
	return store.BackupInfo{}, fmt.Errorf("%w: %s", store.ErrNoBackup, id)
}

func (h *Handle) OpenBackupFile(string, string) (io.ReadCloser, error) { return nil, ErrFake }

// Keep keeps every backup it is asked about: a fake store prunes its own.
func (h *Handle) Keep(created map[string]time.Time, _ time.Time) map[string]bool {
	keep := map[string]bool{}
	for id := range created {
		keep[id] = true
	}
	return keep
}

func (h *Handle) Verify(ctx context.Context, opts store.VerifyOptions) (store.VerifyResult, error) {
	if err := h.work(ctx); err != nil {
		return store.VerifyResult{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastCheck = time.Now()
	return store.VerifyResult{Files: 1, Bytes: h.disk, Deep: opts.Deep, Duration: h.took}, nil
}

func (h *Handle) VerifyBackup(ctx context.Context, id string, _ store.VerifyOptions) (store.BackupVerifyResult, error) {
	if _, err := h.LookupBackup(id); err != nil {
		return store.BackupVerifyResult{}, err
	}
	return store.BackupVerifyResult{}, nil
}

func (h *Handle) RestoreOnce(context.Context, string, string) (store.RestoreResult, error) {
	return store.RestoreResult{}, ErrFake
}

func (h *Handle) RestoreOnceFrom(context.Context, string, store.BackupManifest, func(context.Context, store.BackupFile) (io.ReadCloser, error)) (store.RestoreResult, error) {
	return store.RestoreResult{}, ErrFake
}

func (h *Handle) RestoredWith(string) (store.RestoreResult, bool, error) {
	return store.RestoreResult{}, false, nil
}

func (h *Handle) Drill(context.Context, store.BackupManifest, func(context.Context, store.BackupFile) (io.ReadCloser, error)) (store.DrillReport, error) {
	return store.DrillReport{}, ErrFake
}
