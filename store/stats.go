package store

import (
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Stats describes a store's health and shape. Sizes are bytes.
type Stats struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	Error string `json:"error,omitempty"` // the cause when corrupt, unavailable or unopened
	// NotOwner is the cause given to Disown while the store is disowned
	// (writes refused with ErrNotOwner); empty while it is owned.
	NotOwner string `json:"not_owner,omitempty"`

	DiskBytes     uint64       `json:"disk_bytes"`     // Pebble's disk usage (tables live and obsolete, WAL, MANIFEST, OPTIONS); a store not open: every file in its directory
	LiveBytes     uint64       `json:"live_bytes"`     // sstables of the live version
	EstimatedKeys uint64       `json:"estimated_keys"` // entries minus deletions; overwritten versions count twice until compacted
	Levels        []LevelStats `json:"levels"`
	ReadAmp       int          `json:"read_amp"`
	L0Sublevels   int          `json:"l0_sublevels"`
	Tombstones    uint64       `json:"tombstones"`

	GarbagePointBytes uint64 `json:"garbage_point_bytes"`
	GarbageRangeBytes uint64 `json:"garbage_range_bytes"`
	AboveBottomBytes  uint64 `json:"above_bottom_bytes"` // bytes above the bottom sorted run
	ReclaimableBytes  uint64 `json:"reclaimable_bytes"`  // CompactionRule's estimate
	StatsComplete     bool   `json:"stats_complete"`     // Pebble's table stats cover every table

	LastCompaction   time.Time `json:"last_compaction,omitzero"`
	LastVerify       time.Time `json:"last_verify,omitzero"`
	BackgroundErrors int64     `json:"background_errors"`
}

// LevelStats is one LSM level.
type LevelStats struct {
	Level     int   `json:"level"`
	Tables    int64 `json:"tables"`
	Bytes     int64 `json:"bytes"`
	Sublevels int   `json:"sublevels"`
}

// Stats returns the store's current stats. A store that is not open
// reports its state, error and disk usage only.
func (s *Store) Stats() Stats {
	st := Stats{
		Name:             s.name,
		LastCompaction:   timeOf(s.lastCompact.Load()),
		LastVerify:       timeOf(s.lastVerify.Load()),
		BackgroundErrors: s.bgErrors.Load(),
	}
	state, cause := s.State()
	st.State = state
	if cause != nil {
		st.Error = cause.Error()
	}
	if p := s.notOwner.Load(); p != nil {
		st.NotOwner = (*p).Error()
	}
	db, err := s.acquire()
	if err != nil {
		st.DiskBytes = dirSize(s.dir)
		return st
	}
	defer s.release()
	s.lsmStats(db, &st)
	return st
}

// lsmCache keeps the part of Stats read from Pebble (tables with their
// properties, and Metrics: the costly part, run at the end of every job
// and on every heartbeat) while nothing that could change it happened:
// no write through a handle, no Pebble event (flush, compaction, WAL or
// table created or deleted, table stats loaded, …), the same database, and
// for at most lsmCacheAge.
type lsmCache struct {
	mu      sync.Mutex
	db      *pebble.DB
	changes uint64
	at      time.Time
	st      Stats
}

const lsmCacheAge = time.Second

func (s *Store) lsmStats(db *pebble.DB, st *Stats) {
	c := &s.lsm
	c.mu.Lock()
	defer c.mu.Unlock()
	changes := s.changes.Load() // before reading: a change meanwhile misses the cache next time
	if c.db != db || c.changes != changes || time.Since(c.at) > lsmCacheAge {
		levels, _ := db.SSTables(pebble.WithProperties())
		var fresh Stats
		s.fillStats(&fresh, db.Metrics(), levels)
		c.db, c.changes, c.at, c.st = db, changes, time.Now(), fresh
	}
	l := c.st
	st.DiskBytes, st.LiveBytes, st.EstimatedKeys = l.DiskBytes, l.LiveBytes, l.EstimatedKeys
	st.Levels = append([]LevelStats(nil), l.Levels...)
	st.ReadAmp, st.L0Sublevels, st.Tombstones = l.ReadAmp, l.L0Sublevels, l.Tombstones
	st.GarbagePointBytes, st.GarbageRangeBytes, st.AboveBottomBytes = l.GarbagePointBytes, l.GarbageRangeBytes, l.AboveBottomBytes
	st.ReclaimableBytes, st.StatsComplete = l.ReclaimableBytes, l.StatsComplete
}

// changeCounter is a pebble.Logger for MakeLoggingEventListener: every
// event Pebble reports counts as a change (and is not logged).
type changeCounter struct{ n *atomic.Uint64 }

func (c changeCounter) Infof(string, ...any)  { c.n.Add(1) }
func (c changeCounter) Errorf(string, ...any) { c.n.Add(1) }
func (c changeCounter) Fatalf(string, ...any) { c.n.Add(1) }

// estimateKeys estimates live keys from table properties: entries minus
// deletions and the entries they delete. Overwritten versions count until
// compacted; the memtable is not counted.
func estimateKeys(levels [][]pebble.SSTableInfo) uint64 {
	var n uint64
	for _, level := range levels {
		for _, t := range level {
			if p := t.Properties; p != nil {
				n += p.NumEntries - min(p.NumEntries, 2*p.NumDeletions)
			}
		}
	}
	return n
}

// fillStats fills st from Pebble's metrics and, when not nil, the tables
// with their properties.
func (s *Store) fillStats(st *Stats, m *pebble.Metrics, levels [][]pebble.SSTableInfo) {
	// Pebble counts its files as it makes and deletes them: no walk of the
	// directory.
	st.DiskBytes = m.DiskSpaceUsage()
	st.EstimatedKeys = estimateKeys(levels)
	st.Levels = st.Levels[:0]
	bottom := -1
	for i, l := range m.Levels {
		st.Levels = append(st.Levels, LevelStats{Level: i, Tables: l.TablesCount, Bytes: l.TablesSize, Sublevels: int(l.Sublevels)})
		st.LiveBytes += uint64(l.TablesSize)
		if l.TablesCount > 0 {
			bottom = i
		}
	}
	// Overwritten versions can only sit above the bottom sorted run: in the
	// levels over the bottom non-empty one, or, when everything is still in
	// L0, in all but one of its sublevels.
	switch {
	case bottom > 0:
		st.AboveBottomBytes = st.LiveBytes - uint64(m.Levels[bottom].TablesSize)
	case bottom == 0 && m.Levels[0].Sublevels > 1:
		l0 := m.Levels[0]
		st.AboveBottomBytes = uint64(l0.TablesSize) * uint64(l0.Sublevels-1) / uint64(l0.Sublevels)
	}
	st.ReadAmp = m.ReadAmp()
	st.L0Sublevels = int(m.Levels[0].Sublevels)
	st.Tombstones = m.Keys.TombstoneCount
	st.GarbagePointBytes = max(m.Table.Garbage.PointDeletionsBytesEstimate, pointGarbage(levels))
	st.GarbageRangeBytes = m.Table.Garbage.RangeDeletionsBytesEstimate
	st.StatsComplete = m.Table.InitialStatsCollectionComplete
	st.ReclaimableBytes = s.reg.cfg.Rule.reclaimable(st)
}

// pointGarbage estimates the bytes that the point tombstones above the
// bottom level would reclaim: their count times the bottom level's average
// stored entry size. Pebble's own estimate prices a tombstone by the values
// near it when its stats were computed, often before the data it shadows
// reached the bottom, and then reports a few bytes per deleted key.
func pointGarbage(levels [][]pebble.SSTableInfo) uint64 {
	bottom := -1
	for i, l := range levels {
		if len(l) > 0 {
			bottom = i
		}
	}
	if bottom <= 0 {
		return 0
	}
	var entries, fileBytes, tombstones uint64
	for _, t := range levels[bottom] {
		if p := t.Properties; p != nil {
			entries += p.NumEntries
			fileBytes += t.Size
		}
	}
	for _, l := range levels[:bottom] {
		for _, t := range l {
			if p := t.Properties; p != nil {
				tombstones += p.NumDeletions - min(p.NumDeletions, p.NumRangeDeletions)
			}
		}
	}
	if entries == 0 {
		return 0
	}
	return tombstones * (fileBytes / entries)
}

// storeSize is the size of a store's own files: its directory without
// archive/, which holds only what Pebble is done with (obsolete tables
// waiting for the shipper's next trim, WALs waiting to be shipped).
func storeSize(dir string) uint64 { return sizeUnder(dir, filepath.Join(dir, archiveDir)) }

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) uint64 { return sizeUnder(dir, "") }

// sizeUnder sums the sizes of the regular files under dir, leaving out
// the directory skip.
func sizeUnder(dir, skip string) uint64 {
	var n uint64
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil
		case d.IsDir() && path == skip:
			return filepath.SkipDir
		case d.IsDir():
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += uint64(info.Size())
		}
		return nil
	})
	return n
}
