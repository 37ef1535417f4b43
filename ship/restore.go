package ship

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"storekeeper/offsite"
	"storekeeper/store"
)

// ErrNoPoint is returned for a moment no backup and shipped log reach.
var ErrNoPoint = errors.New("no backup and shipped commit log reach that moment")

// ErrGap is returned for a moment past a gap in the shipped commit log.
var ErrGap = errors.New("the shipped commit log has a gap")

// Plan is how a store is rebuilt as it was at a moment: a backup, then
// runs of the commit log replayed onto it.
type Plan struct {
	Backup   store.BackupManifest `json:"backup"`
	Target   string               `json:"target,omitempty"` // where the backup is read from; empty: the local backups
	Steps    []store.ReplayStep   `json:"steps"`
	Timeline store.Timeline       `json:"timeline"` // the timeline the moment is on

	target *offsite.Target
}

// RestoreAt restores the store to the moment at: the newest backup that
// holds nothing committed after at, plus the shipped commit log up to at,
// replayed into the staged copy before the restore's swap. What was read
// of the log but not sent is sealed first and read from the local copy.
// key makes it once-only (store.RestoreWith).
func (sh *Shipper) RestoreAt(ctx context.Context, name, key string, at time.Time) (store.RestoreResult, Plan, error) {
	s, err := sh.reg.Store(name)
	if err != nil {
		return store.RestoreResult{}, Plan{}, err
	}
	if err := sh.Drain(ctx, name); err != nil {
		sh.log.Warn("restore to a moment: not every segment reached the targets; the local copies are used", "store", name, "err", err)
	}
	// Collect deletes no segment while a restore may read it.
	ss := sh.storeShip(name)
	ss.use.RLock()
	defer ss.use.RUnlock()
	p, err := sh.Plan(ctx, s, at)
	if err != nil {
		return store.RestoreResult{}, p, err
	}
	req := store.RestoreRequest{Key: key, Replay: sh.replayOf(name, p, at)}
	if p.target == nil {
		req.BackupID = p.Backup.ID
	} else {
		m := p.Backup
		req.Manifest, req.Open = &m, p.target.OpenObject
	}
	res, err := s.RestoreWith(ctx, req)
	if err == nil && res.Log != nil {
		sh.log.Info("store restored to a moment", "store", name, "at", at, "backup", p.Backup.ID,
			"batches", res.Log.Batches, "writes", res.Log.Writes, "last_write_at", res.Log.LastWriteAt, "timeline", res.Log.Timeline)
	}
	return res, p, err
}

// Plan finds how to rebuild s as it was at at.
func (sh *Shipper) Plan(ctx context.Context, s *store.Store, at time.Time) (Plan, error) {
	tl, err := s.Timeline()
	if err != nil {
		return Plan{}, err
	}
	// The timeline the store was on at that moment: a restore after it
	// started the current one.
	if tl, err = sh.walkBack(ctx, s.Name(), tl, func(t store.Timeline) bool { return !at.Before(t.Created) }); err != nil {
		return Plan{}, err
	}
	if at.Before(tl.Created) {
		return Plan{}, fmt.Errorf("%w: store %s's commit log starts at %s (restore a backup instead)", ErrNoPoint, s.Name(), tl.Created.Format(time.RFC3339Nano))
	}
	p := Plan{Timeline: tl}
	found, err := sh.newestBackup(ctx, s, tl.ID, at, &p)
	if err != nil {
		return p, err
	}
	if found {
		p.Steps = []store.ReplayStep{{Timeline: tl.ID, From: p.Backup.LogSeq + 1, Until: at.UTC()}}
		return p, nil
	}
	if tl.Parent == nil {
		return p, fmt.Errorf("%w: store %s has no backup taken on timeline %s before %s", ErrNoPoint, s.Name(), tl.ID, at.Format(time.RFC3339Nano))
	}
	// No backup on this timeline yet: rebuild where the restore that
	// started it began, as that restore did, then this timeline's log.
	if err := sh.backupByID(ctx, s, tl.Parent.Backup, &p); err != nil {
		return p, err
	}
	p.Steps = append(slices.Clone(tl.Parent.Replayed), store.ReplayStep{Timeline: tl.ID, From: tl.Start, Until: at.UTC()})
	return p, nil
}

// walkBack follows tl's parents to the first timeline of its chain that
// stop accepts, or to the chain's first (no parent). Timeline records
// come from targets too, so a chain that comes back to a timeline already
// passed (only a planted record can make one) is refused rather than
// followed.
func (sh *Shipper) walkBack(ctx context.Context, name string, tl store.Timeline, stop func(store.Timeline) bool) (store.Timeline, error) {
	seen := map[string]bool{tl.ID: true}
	for !stop(tl) && tl.Parent != nil {
		if seen[tl.Parent.Timeline] {
			return tl, fmt.Errorf("%w: store %s: timeline %s names %s as its parent, which comes after it", store.ErrBadBackup, name, tl.ID, tl.Parent.Timeline)
		}
		parent, err := sh.timeline(ctx, name, tl.Parent.Timeline)
		if err != nil {
			return tl, err
		}
		seen[parent.ID] = true
		tl = parent
	}
	return tl, nil
}

// timeline reads a timeline's record: kept locally with its segments, or
// from a target.
func (sh *Shipper) timeline(ctx context.Context, name, id string) (store.Timeline, error) {
	var tl store.Timeline
	if b, err := os.ReadFile(filepath.Join(sh.cfg.Dir, name, "pending", id, "timeline.json")); err == nil {
		if json.Unmarshal(b, &tl) == nil && tl.ID == id {
			return tl, nil
		}
	}
	var errs []error
	for _, t := range sh.cfg.Targets {
		tl, err := t.Timeline(ctx, name, id)
		if err == nil {
			return tl, nil
		}
		errs = append(errs, err)
	}
	return tl, fmt.Errorf("store %s: timeline %s not found: %w", name, id, errors.Join(errs...))
}

// newestBackup finds the newest backup of timeline that holds nothing
// committed after at: local ones first, then each target's.
func (sh *Shipper) newestBackup(ctx context.Context, s *store.Store, timeline string, at time.Time, p *Plan) (bool, error) {
	usable := func(m store.BackupManifest) bool {
		return m.Timeline == timeline && !m.LogAt.IsZero() && !m.LogAt.After(at)
	}
	found := false
	if local, err := s.Backups(); err == nil {
		for _, b := range local {
			if !b.Bad && usable(b.BackupManifest) && (!found || b.LogAt.After(p.Backup.LogAt)) {
				p.Backup, found = b.BackupManifest, true
			}
		}
	}
	for _, t := range sh.cfg.Targets {
		entries, err := t.Backups(ctx, s.Name())
		if err != nil {
			sh.log.Warn("restore to a moment: target's backups not read", "target", t.Name, "err", err)
			continue
		}
		read := 0
		for _, e := range entries { // newest first
			if e.CreatedAt.After(at) || (found && !e.CreatedAt.After(p.Backup.LogAt)) {
				continue
			}
			if read++; read > 20 {
				break
			}
			m, err := t.Manifest(ctx, s.Name(), e.ID)
			if err != nil || !usable(m) {
				continue
			}
			if !found || m.LogAt.After(p.Backup.LogAt) {
				p.Backup, p.Target, p.target, found = m, t.Name, t, true
			}
			break
		}
	}
	if found && p.target != nil && p.Target != "" {
		// A local copy of the same backup is read instead.
		if local, err := s.Backups(); err == nil {
			for _, b := range local {
				if b.ID == p.Backup.ID && !b.Bad {
					p.Target, p.target = "", nil
				}
			}
		}
	}
	return found, nil
}

// backupByID finds a backup by ID, locally or on a target.
func (sh *Shipper) backupByID(ctx context.Context, s *store.Store, id string, p *Plan) error {
	if local, err := s.Backups(); err == nil {
		for _, b := range local {
			if b.ID == id && !b.Bad {
				p.Backup = b.BackupManifest
				return nil
			}
		}
	}
	var errs []error
	for _, t := range sh.cfg.Targets {
		m, err := t.Manifest(ctx, s.Name(), id)
		if err == nil {
			p.Backup, p.Target, p.target = m, t.Name, t
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: backup %s, which the timeline was restored from, is gone: %w", ErrNoPoint, id, errors.Join(errs...))
}

// source is one segment and where it can be read.
type source struct {
	seg     offsite.Segment
	local   string
	targets []*offsite.Target
}

// segments lists a timeline's segments from the local copies and every
// target, in order of First (longest first where two start together).
func (sh *Shipper) segments(ctx context.Context, name, timeline string) []*source {
	by := map[[2]uint64]*source{}
	ss := sh.storeShip(name)
	ss.mu.Lock()
	for _, p := range ss.pending {
		if p.timeline == timeline {
			by[[2]uint64{p.first, p.next}] = &source{seg: offsite.Segment{Timeline: timeline, First: p.first, Next: p.next}, local: p.path}
		}
	}
	ss.mu.Unlock()
	for _, t := range sh.cfg.Targets {
		segs, err := t.Segments(ctx, name, timeline)
		if err != nil {
			sh.log.Warn("restore to a moment: target's segments not listed", "target", t.Name, "err", err)
			continue
		}
		for _, sg := range segs {
			k := [2]uint64{sg.First, sg.Next}
			if by[k] == nil {
				by[k] = &source{seg: sg}
			}
			by[k].targets = append(by[k].targets, t)
		}
	}
	out := make([]*source, 0, len(by))
	for _, src := range by {
		out = append(out, src)
	}
	slices.SortFunc(out, func(a, b *source) int {
		if c := cmp.Compare(a.seg.First, b.seg.First); c != 0 {
			return c
		}
		return cmp.Compare(b.seg.Next, a.seg.Next)
	})
	return out
}

func (sh *Shipper) read(ctx context.Context, name string, src *source) ([]byte, error) {
	var errs []error
	if src.local != "" {
		b, err := os.ReadFile(src.local)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	for _, t := range src.targets {
		b, err := t.ReadSegment(ctx, name, src.seg)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("segment %s of timeline %s: %w", offsite.SegmentName(src.seg.First, src.seg.Next), src.seg.Timeline, errors.Join(errs...))
}

// replay applies steps' batches in order: each step's from its From on,
// stopping at the first batch committed after its Until. A batch missing
// in the shipped log before Until is ErrGap.
func (sh *Shipper) replay(ctx context.Context, name string, steps []store.ReplayStep, apply func(store.LogBatch) error) (store.ReplayResult, error) {
	var rr store.ReplayResult
	for _, st := range steps {
		next := st.From
		var lastAt time.Time
		for _, src := range sh.segments(ctx, name, st.Timeline) {
			if src.seg.Next <= next {
				continue
			}
			if src.seg.First > next {
				return rr, fmt.Errorf("%w: timeline %s: nothing shipped from sequence %d (after the write of %s) to %d; restore to a moment before %s",
					ErrGap, st.Timeline, next, lastAt.Format(time.RFC3339Nano), src.seg.First, lastAt.Format(time.RFC3339Nano))
			}
			data, err := sh.read(ctx, name, src)
			if err != nil {
				return rr, err
			}
			stop := false
			err = eachBatch(data, func(b store.LogBatch) error {
				switch {
				case b.Count == 0 || b.Seq < next:
					return nil
				case b.Seq > next:
					return fmt.Errorf("%w: timeline %s: batch %d missing", ErrGap, st.Timeline, next)
				case b.Stamp.After(st.Until):
					stop = true
					return errStop
				}
				if err := apply(b); err != nil {
					return err
				}
				next, lastAt = b.Next(), b.Stamp
				rr.Through, rr.LastWriteAt = b.Next()-1, b.Stamp
				return nil
			})
			if err != nil {
				return rr, err
			}
			if stop {
				break
			}
		}
	}
	return rr, nil
}

// DrillAt proves, without touching the store, that it can be restored to
// the moment at: the plan's backup is fetched into a scratch directory
// and proven as a drill does (hashes, fingerprints, CheckLevels), then
// the shipped log is replayed onto it up to at and CheckLevels runs
// again.
func (sh *Shipper) DrillAt(ctx context.Context, name string, at time.Time) (store.DrillReport, Plan, error) {
	s, err := sh.reg.Store(name)
	if err != nil {
		return store.DrillReport{}, Plan{}, err
	}
	if err := sh.Drain(ctx, name); err != nil {
		sh.log.Warn("drill at a moment: not every segment reached the targets; the local copies are used", "store", name, "err", err)
	}
	ss := sh.storeShip(name)
	ss.use.RLock()
	defer ss.use.RUnlock()
	p, err := sh.Plan(ctx, s, at)
	if err != nil {
		return store.DrillReport{}, p, err
	}
	open := func(_ context.Context, f store.BackupFile) (io.ReadCloser, error) {
		return s.OpenBackupFile(p.Backup.ID, f.Name)
	}
	if p.target != nil {
		open = p.target.OpenObject
	}
	rep, err := s.DrillWith(ctx, p.Backup, open, sh.replayOf(name, p, at))
	return rep, p, err
}

// replayOf is what a restore or drill to at replays: p's steps, read
// from the shipped log, recorded as the branch of the timeline a restore
// starts.
func (sh *Shipper) replayOf(name string, p Plan, at time.Time) *store.Replay {
	return &store.Replay{
		Branch: store.Branch{Timeline: p.Timeline.ID, At: at.UTC(), Replayed: p.Steps},
		Batches: func(ctx context.Context, apply func(store.LogBatch) error) (store.ReplayResult, error) {
			return sh.replay(ctx, name, p.Steps, apply)
		},
	}
}
