package store

import (
	"io/fs"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Stats describes a store's health and shape. Sizes are bytes.
type Stats struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	Error string `json:"error,omitempty"`

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
	db, err := s.acquire()
	if err != nil {
		st.DiskBytes = dirSize(s.dir)
		return st
	}
	defer s.release()
	levels, _ := db.SSTables(pebble.WithProperties())
	m := db.Metrics()
	// Pebble counts its files as it makes and deletes them: no walk of the
	// directory on every call (Stats runs at the end of every job).
	st.DiskBytes = m.DiskSpaceUsage()
	s.fillStats(&st, m, levels)
	st.EstimatedKeys = estimateKeys(levels)
	return st
}

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

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) uint64 {
	var n uint64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += uint64(info.Size())
		}
		return nil
	})
	return n
}
