package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// Restore drills. A drill restores one backup of a store into a scratch
// directory on the store's node and proves it usable (store.Drill); it
// never touches the live store. Its source is the job's target, or by
// default each configured target in turn (the one after the last drill's),
// or the local backup directory when there is no target. The store's last
// drill is published with its status; a passing drill moves the store's
// last restorable point to the backup it restored.

// drills is what this node knows of its stores' last drills.
type drills struct {
	mu sync.Mutex
	m  map[string]jobs.DrillStatus
}

func (d *drills) get(name string) *jobs.DrillStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.m[name]
	if !ok {
		return nil
	}
	return &st
}

// record keeps a drill's status: a failure keeps the restorable point an
// earlier drill proved.
func (d *drills) record(name string, st jobs.DrillStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]jobs.DrillStatus{}
	}
	prev := d.m[name]
	if !st.OK || st.BackupAt.Before(prev.Restorable) {
		st.Restorable = prev.Restorable
	}
	if st.OK && st.BackupAt.After(st.Restorable) {
		st.Restorable = st.BackupAt
	}
	d.m[name] = st
}

// seed takes a drill status published before this process started, unless
// a drill has run here since.
func (d *drills) seed(name string, st jobs.DrillStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]jobs.DrillStatus{}
	}
	if _, ok := d.m[name]; !ok {
		d.m[name] = st
	}
}

// learnDrills reads each store's last drill from its published status
// (one round trip), so that a restarted node keeps telling its stores'
// restorable points. Unread, they are learnt again from the next drills.
func (w *Worker) learnDrills(ctx context.Context) {
	names := w.stores.Names()
	raws, err := jobsdb.PublishedStatus(ctx, w.rdb, names)
	if err != nil {
		w.log.Warn("stores' last drills not read; the next drills tell them again", "err", err)
		return
	}
	for i, raw := range raws {
		var st jobs.StoreStatus
		if raw != nil && json.Unmarshal(raw, &st) == nil && st.Drill != nil {
			w.drills.seed(names[i], *st.Drill)
		}
	}
}

// drillTarget is the target a drill without one uses: the one after the
// store's last drill's, so that each target is drilled in turn; "" (the
// local backups) when there is none.
func (w *Worker) drillTarget(name string) string {
	names := w.targetNames()
	if len(names) == 0 {
		return ""
	}
	last := w.drills.get(name)
	if last == nil {
		return names[0]
	}
	i := slices.Index(names, last.Target)
	return names[(i+1)%len(names)]
}

func (w *Worker) drillJob(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	start := time.Now()
	if !p.Params.At.IsZero() {
		return w.drillAtMoment(ctx, s, p)
	}
	source := p.Params.Target
	if source == "" {
		source = w.drillTarget(s.Name())
	}
	st := jobs.DrillStatus{JobID: p.JobID, Target: source}
	m, open, err := w.drillSource(ctx, s, source, p.Params.BackupID)
	if err == nil {
		st.BackupID, st.BackupAt = m.ID, m.CreatedAt
		var rep store.DrillReport
		if rep, err = s.Drill(ctx, m, open); err == nil {
			st.OK, st.RTO = true, time.Since(start)
			st.At = time.Now().UTC()
			w.drills.record(s.Name(), st)
			w.publishSoon(s.Name())
			return outcome{Status: jobs.StatusDrilled, BackupID: m.ID, BytesAfter: uint64(rep.Bytes),
				Result: jobs.DrillResult{Target: source, BackupID: m.ID, BackupAt: m.CreatedAt, Files: rep.Files, Bytes: rep.Bytes,
					Points: rep.Points, Fingerprint: rep.Fingerprint, FingerprintChecked: rep.FingerprintChecked, RTO: st.RTO,
					Fetch: rep.Timing.Fetch, Check: rep.Timing.Check}}, nil
		}
	}
	if ctx.Err() == nil {
		if source != "" && m.ID != "" && errors.Is(err, store.ErrBadBackup) {
			err = w.repairTarget(ctx, s, source, m, err)
		}
		st.Error, st.At = err.Error(), time.Now().UTC()
		w.drills.record(s.Name(), st)
		w.publishSoon(s.Name())
	}
	return outcome{}, err
}

// drillAtMoment is a drill with Params.At: it proves the store can be
// restored to that moment (package ship's DrillAt) and records nothing
// as the store's last drill, which is about its newest backup.
func (w *Worker) drillAtMoment(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	if w.cfg.Shipper == nil {
		return outcome{}, fmt.Errorf("store %s: a drill at a moment needs the commit log shipped (--backup-target, --ship-interval): %w", s.Name(), store.ErrNotShipping)
	}
	start := time.Now()
	rep, plan, err := w.cfg.Shipper.DrillAt(ctx, s.Name(), p.Params.At)
	if err != nil {
		return outcome{}, err
	}
	res := jobs.DrillResult{Target: plan.Target, BackupID: rep.BackupID, BackupAt: rep.BackupAt, Files: rep.Files, Bytes: rep.Bytes,
		Points: rep.Points, Fingerprint: rep.Fingerprint, FingerprintChecked: rep.FingerprintChecked, RTO: time.Since(start),
		Fetch: rep.Timing.Fetch, Check: rep.Timing.Check}
	if l := rep.Log; l != nil {
		res.Log = &jobs.RestoredLog{At: l.At, Batches: l.Batches, Writes: l.Writes, Through: l.Through, LastWriteAt: l.LastWriteAt, Timeline: plan.Timeline.ID}
	}
	return outcome{Status: jobs.StatusDrilled, BackupID: rep.BackupID, BytesAfter: uint64(rep.Bytes), Result: res}, nil
}

// repairTarget follows a drill that found backup m damaged on a target:
// every object of m there is checked, and each damaged or missing one is
// sent again from this node's copy of m, when it has one (a backup made
// here). The drill still fails (the target was not restorable when it
// ran); its error says what was repaired, and the next drill proves it.
// Without the repair, a damaged object stays damaged: later uploads find
// it present and skip it, and every backup sharing it stays unrestorable
// from that target.
func (w *Worker) repairTarget(ctx context.Context, s Handle, target string, m store.BackupManifest, drillErr error) error {
	t, err := w.target(target)
	if err != nil {
		return drillErr
	}
	if _, err := s.LookupBackup(m.ID); err != nil {
		return fmt.Errorf("%w; backup %s is not among this node's backups, so target %s's copy cannot be repaired from here", drillErr, m.ID, target)
	}
	rep, err := t.Repair(ctx, s, m)
	if err != nil {
		w.log.Warn("repairing a damaged backup on a target failed", "store", s.Name(), "target", target, "backup", m.ID, "err", err)
		return fmt.Errorf("%w; repairing target %s's copy failed: %w", drillErr, target, err)
	}
	w.log.Warn("a drill found a damaged backup on a target; its objects were checked and the damaged ones sent again",
		"store", s.Name(), "target", target, "backup", m.ID, "checked", rep.Checked, "resent", rep.Resent, "unrepaired", rep.Missing)
	msg := fmt.Sprintf("target %s's copy of backup %s: %d objects checked, %d sent again from this node's copy %v",
		target, m.ID, rep.Checked, len(rep.Resent), rep.Resent)
	if len(rep.Missing) > 0 {
		msg += fmt.Sprintf(", %d not repairable (this node's copy is not whole) %v", len(rep.Missing), rep.Missing)
	}
	return fmt.Errorf("%w; %s", drillErr, msg)
}

// drillSource finds the backup a drill restores (id, or the newest) on
// target, or among the local backups when target is "", and how to read
// its files.
func (w *Worker) drillSource(ctx context.Context, s Handle, target, id string) (store.BackupManifest, func(context.Context, store.BackupFile) (io.ReadCloser, error), error) {
	if target != "" {
		t, err := w.target(target)
		if err != nil {
			return store.BackupManifest{}, nil, fmt.Errorf("%w: %w", store.ErrNoBackup, err)
		}
		m, err := targetManifest(ctx, t, s.Name(), id)
		return m, t.OpenObject, err
	}
	if id == "" {
		infos, err := s.Backups()
		if err != nil {
			return store.BackupManifest{}, nil, err
		}
		b, ok := jobs.NewestUsable(backupSummaries(infos))
		if !ok {
			return store.BackupManifest{}, nil, fmt.Errorf("%w: %s has no usable local backup", store.ErrNoBackup, s.Name())
		}
		id = b.ID
	}
	b, err := s.LookupBackup(id)
	if err != nil {
		return store.BackupManifest{}, nil, err
	}
	return b.BackupManifest, func(_ context.Context, f store.BackupFile) (io.ReadCloser, error) {
		return s.OpenBackupFile(id, f.Name)
	}, nil
}
