package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// CompactionRule decides whether a full compaction is worth it. Pebble's
// garbage estimates count point and range deletions but not overwritten
// versions, so the rule also counts a share of the bytes that sit above the
// bottom level, where overwritten versions live until compacted.
type CompactionRule struct {
	// MinReclaimBytes: compact only when at least this much is estimated
	// reclaimable (default 1 MiB).
	MinReclaimBytes uint64
	// MinReclaimRatio: ...and when that is at least this share of the live
	// bytes (default 0.10).
	MinReclaimRatio float64
	// OverwriteShare: the share of bytes above the bottom level counted as
	// reclaimable (default 0.5; 0 counts deletions only).
	OverwriteShare float64
	// MaxL0Sublevels: compact whenever L0 has at least this many sublevels,
	// whatever the estimate (default 4).
	MaxL0Sublevels int
}

func (r CompactionRule) withDefaults() CompactionRule {
	if r.MinReclaimBytes == 0 {
		r.MinReclaimBytes = 1 << 20
	}
	if r.MinReclaimRatio == 0 {
		r.MinReclaimRatio = 0.10
	}
	if r.OverwriteShare == 0 {
		r.OverwriteShare = 0.5
	}
	if r.MaxL0Sublevels == 0 {
		r.MaxL0Sublevels = 4
	}
	return r
}

func (r CompactionRule) validate() error {
	if r.MinReclaimRatio < 0 || r.MinReclaimRatio > 1 || r.OverwriteShare < 0 || r.OverwriteShare > 1 {
		return errors.New("store: compaction rule ratios must be within [0, 1]")
	}
	if r.MaxL0Sublevels < 0 {
		return errors.New("store: compaction rule MaxL0Sublevels must not be negative")
	}
	return nil
}

func (r CompactionRule) reclaimable(st *Stats) uint64 {
	return st.GarbagePointBytes + st.GarbageRangeBytes + uint64(float64(st.AboveBottomBytes)*r.OverwriteShare)
}

// Decision is what the rule concluded, with the numbers it used.
type Decision struct {
	Compact bool   `json:"compact"`
	Reason  string `json:"reason"`
	Stats   Stats  `json:"stats"`
}

// decide applies the rule to st.
func (r CompactionRule) decide(st Stats) Decision {
	d := Decision{Stats: st}
	reclaim := st.ReclaimableBytes
	garbage := st.GarbagePointBytes + st.GarbageRangeBytes
	switch {
	case st.LiveBytes == 0:
		d.Reason = "store is empty"
	case st.ReadAmp <= 1 && garbage == 0:
		d.Reason = "fully compacted: read amplification 1 and no deletion garbage"
	case st.L0Sublevels >= r.MaxL0Sublevels:
		d.Compact = true
		d.Reason = fmt.Sprintf("L0 has %d sublevels (limit %d)", st.L0Sublevels, r.MaxL0Sublevels)
	case reclaim >= r.MinReclaimBytes && float64(reclaim) >= r.MinReclaimRatio*float64(st.LiveBytes):
		d.Compact = true
		d.Reason = fmt.Sprintf("about %d of %d live bytes reclaimable (%.0f%%)", reclaim, st.LiveBytes, 100*float64(reclaim)/float64(st.LiveBytes))
	default:
		d.Reason = fmt.Sprintf("only about %d of %d live bytes reclaimable; thresholds are %d bytes and %.0f%%",
			reclaim, st.LiveBytes, r.MinReclaimBytes, 100*r.MinReclaimRatio)
	}
	return d
}

// CompactOptions tune one compaction.
type CompactOptions struct {
	Force   bool          // compact whatever the rule says
	DryRun  bool          // decide and report, change nothing
	Timeout time.Duration // 0 = the registry's CompactTimeout
}

// Outcome names what a compaction did; the values match history statuses.
type Outcome string

const (
	Compacted Outcome = "compacted"
	Skipped   Outcome = "skipped"
	DryRun    Outcome = "dry_run"
)

// CompactResult reports a compaction. BytesBefore and BytesAfter are the
// size on disk of the store's files (its directory without archive/,
// where a store that ships keeps what Pebble is done with until the
// shipper's next trim); BytesAfter is measured once Pebble has deleted
// (or archived) the obsolete files.
type CompactResult struct {
	Outcome     Outcome       `json:"outcome"`
	Decision    Decision      `json:"decision"`
	BytesBefore uint64        `json:"bytes_before"`
	BytesAfter  uint64        `json:"bytes_after"`
	Duration    time.Duration `json:"duration"`
}

// Compact compacts the whole key range when the rule says it is worth it
// (or opts.Force). It always runs under a deadline and stops when ctx is
// cancelled or the store is fenced or closed; Pebble finishes the
// compaction already running first, so a cancel can take as long as one
// table's compaction. A disowned store refuses with ErrNotOwner.
func (s *Store) Compact(ctx context.Context, opts CompactOptions) (CompactResult, error) {
	start := time.Now()
	if err := s.owned(); err != nil {
		return CompactResult{}, err
	}
	db, err := s.acquire()
	if err != nil {
		return CompactResult{}, err
	}
	defer s.release()
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = s.reg.cfg.CompactTimeout
	}
	ctx, stop := s.longContext(ctx)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Pebble retries a failed flush or compaction (ENOSPC, I/O errors)
	// until it succeeds, so a Flush or Compact that hits one never returns:
	// the first background error aborts this compaction instead.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	defer s.watchBackground(abort)()

	// Flush so the memtable's data is inside the bounds and the stats.
	progress(ctx, "flushing", 0, 0)
	// While Pebble's flushes fail (a full disk), asking for one more
	// blocks until they succeed again: say why instead.
	if err := s.failingFlush(); err != nil {
		return CompactResult{}, fmt.Errorf("store %s: flushes are failing, not compacting: %w", s.name, err)
	}
	flushed, err := db.AsyncFlush()
	if err != nil {
		return CompactResult{}, s.wrap("flush", err)
	}
	select {
	case <-flushed:
	case <-ctx.Done():
		return CompactResult{}, fmt.Errorf("store %s: flush before compacting stopped: %w", s.name, context.Cause(ctx))
	}
	progress(ctx, "deciding", 0, 0)
	if err := waitStats(ctx, db); err != nil {
		return CompactResult{}, err
	}
	st := Stats{Name: s.name, State: StateOpen}
	levels, err := db.SSTables(pebble.WithProperties())
	if err != nil {
		return CompactResult{}, s.wrap("list tables", err)
	}
	s.fillStats(&st, db.Metrics(), levels)
	res := CompactResult{Decision: s.reg.cfg.Rule.decide(st), BytesBefore: storeSize(s.dir)}
	if opts.Force && !res.Decision.Compact {
		res.Decision.Compact = true
		res.Decision.Reason = "forced; the rule said: " + res.Decision.Reason
	}
	switch {
	case opts.DryRun:
		res.Outcome = DryRun
	case !res.Decision.Compact:
		res.Outcome = Skipped
	}
	if res.Outcome != "" {
		res.BytesAfter = res.BytesBefore
		res.Duration = time.Since(start)
		return res, nil
	}

	lo, hi, err := bounds(db, s.opts.Comparer.Compare)
	if err != nil {
		return res, s.wrap("bounds", err)
	}
	if lo == nil {
		res.Outcome, res.Decision.Reason = Skipped, "store has no sstables"
		res.BytesAfter, res.Duration = res.BytesBefore, time.Since(start)
		return res, nil
	}
	// A full compaction writes a new copy of the live data before it
	// deletes the old one.
	if err := s.reg.preflight("compact", s.dir, st.LiveBytes); err != nil {
		return res, err
	}
	progress(ctx, "compacting", 0, int64(st.LiveBytes))
	if err := db.Compact(ctx, lo, hi, true); err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return res, fmt.Errorf("store %s: compact stopped: %w", s.name, cause)
		}
		if pebble.IsCorruptionError(err) {
			cerr := &CorruptionError{Store: s.name, Err: err}
			s.markCorrupt(db, cerr)
			return res, cerr
		}
		return res, s.wrap("compact", err)
	}
	progress(ctx, "measuring", 0, 0)
	waitObsolete(ctx, db)
	s.lastCompact.Store(nowNano())
	res.Outcome = Compacted
	res.BytesAfter = storeSize(s.dir)
	res.Duration = time.Since(start)
	return res, nil
}

// bounds returns the full key range of the store's sstables: from the
// smallest key to just past the largest. Iterator First/Last would miss
// range tombstones.
func bounds(db *pebble.DB, cmp pebble.Compare) (lo, hi []byte, err error) {
	levels, err := db.SSTables()
	if err != nil {
		return nil, nil, err
	}
	for _, level := range levels {
		for _, t := range level {
			if lo == nil || cmp(t.Smallest.UserKey, lo) < 0 {
				lo = append([]byte(nil), t.Smallest.UserKey...)
			}
			if hi == nil || cmp(t.Largest.UserKey, hi) > 0 {
				hi = append([]byte(nil), t.Largest.UserKey...)
			}
		}
	}
	if lo == nil {
		return nil, nil, nil
	}
	return lo, append(hi, 0), nil
}

// waitStats waits (briefly) for Pebble's table stats, on which the garbage
// estimates depend: those of the tables found at open and of new ones.
func waitStats(ctx context.Context, db *pebble.DB) error {
	return poll(ctx, 10*time.Second, func() bool {
		m := db.Metrics()
		return m.Table.InitialStatsCollectionComplete && m.Table.PendingStatsCollectionCount == 0
	})
}

// waitObsolete waits until Pebble has deleted the files the compaction made
// obsolete, so the size measured afterwards is the real one.
func waitObsolete(ctx context.Context, db *pebble.DB) {
	_ = poll(ctx, 10*time.Second, func() bool {
		m := db.Metrics()
		return m.Table.ObsoleteCount == 0 && m.Table.ZombieCount == 0
	})
}

// poll checks cond every few milliseconds until it holds, limit passes
// (not an error: the caller proceeds with what it has) or ctx ends.
func poll(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
	}
	return nil
}
