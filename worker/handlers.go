package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"storekeeper/jobs"
	"storekeeper/ship"
	"storekeeper/store"
)

func compactJob(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	res, err := s.Compact(ctx, store.CompactOptions{Force: p.Params.Force, DryRun: p.Params.DryRun})
	if err != nil {
		return outcome{}, err
	}
	status := map[store.Outcome]jobs.HistoryStatus{store.Compacted: jobs.StatusCompacted, store.Skipped: jobs.StatusSkipped, store.DryRun: jobs.StatusDryRun}[res.Outcome]
	return outcome{Status: status, Reason: res.Decision.Reason, Result: compactResult(res), BytesBefore: res.BytesBefore, BytesAfter: res.BytesAfter}, nil
}

func backupJob(ctx context.Context, s Handle, _ jobs.Payload) (outcome, error) {
	res, err := s.Backup(ctx)
	if err != nil {
		return outcome{}, err
	}
	return outcome{Status: jobs.StatusBackedUp, Result: backupResult(res), BytesAfter: uint64(res.Backup.Bytes), BackupID: res.Backup.ID}, nil
}

// verifyJob checks the live store, then its newest backup not yet known
// bad. Finding corruption is the job done: a corrupt live store succeeds
// with status corrupt (the store reports it, and the worker's incident
// handling emits store.corrupt and decides the restore); a corrupt backup
// is marked bad, emits backup.corrupt and notifies, and never touches the
// live store.
func verifyJob(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	res, err := s.Verify(ctx, store.VerifyOptions{Deep: p.Params.Deep})
	if errors.Is(err, store.ErrCorrupt) {
		return outcome{Status: jobs.StatusCorrupt, Reason: err.Error(), Result: jobs.VerifyResult{Corrupt: err.Error()}}, nil
	}
	if err != nil {
		return outcome{}, err
	}
	result := &jobs.VerifyResult{Live: verifyCheck(res)}
	out := outcome{Status: jobs.StatusVerified, Result: result}
	backups, err := s.Backups()
	if err != nil || len(backups) == 0 {
		return out, nil // no backup directory, or nothing to check yet
	}
	for _, b := range backups {
		if b.Bad {
			continue
		}
		bres, err := s.VerifyBackup(ctx, b.ID, store.VerifyOptions{Deep: p.Params.Deep})
		if errors.Is(err, store.ErrBadBackup) {
			now := time.Now().UTC()
			result.Backup = &jobs.VerifiedBackup{ID: b.ID, Bad: err.Error()}
			out.Reason = "backup " + b.ID + " is corrupt"
			out.Events = append(out.Events, jobs.Event{Type: jobs.EventBackupCorrupt, JobID: p.JobID, Kind: p.Kind, Store: p.Store,
				Trigger: p.Trigger, Actor: p.Actor, BackupID: b.ID, BackupAt: b.CreatedAt, Error: err.Error()})
			out.Notes = append(out.Notes, jobs.Notification{ID: jobs.NotificationID(string(jobs.EventBackupCorrupt), p.Store, b.ID),
				Type: jobs.EventBackupCorrupt, Store: p.Store, JobID: p.JobID, Kind: p.Kind, Trigger: p.Trigger, Actor: p.Actor,
				Error: err.Error(), BackupID: b.ID, BackupAt: b.CreatedAt, At: now,
				Summary: fmt.Sprintf("backup %s of store %s is corrupt and was marked bad; restores will not use it (the live store is fine)", b.ID, p.Store)})
			return out, nil
		}
		if err != nil {
			return outcome{}, err
		}
		result.Backup = &jobs.VerifiedBackup{ID: bres.ID,
			VerifyCheck: &jobs.VerifyCheck{Files: bres.Files, Bytes: uint64(bres.Bytes), Points: bres.Points, Deep: bres.Deep, Duration: bres.Duration}}
		break
	}
	return out, nil
}

// restoreJob restores the backup the job names, or the newest usable one,
// by jobs.BackupSummary.Usable: the store refuses only a backup known bad.
// It restores once per job (store.RestoreOnce, keyed by the job id): an
// attempt after one that restored the store but could not record it (its
// process died, Redis refused the write, its lease ran out) reports that
// restore, whose rollback window is the one that happened, and does not
// roll the store back again. With backup targets, the backup may come
// from one first (restoreFrom).
func (w *Worker) restoreJob(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	res, done, err := s.RestoredWith(p.JobID)
	if err != nil {
		return outcome{}, err
	}
	id := res.BackupID // done: RestoreOnce replays it, checking the store is open
	var remote *remoteBackup
	if !p.Params.At.IsZero() && !done {
		return w.restoreToMoment(ctx, s, p)
	}
	if sh := w.cfg.Shipper; sh != nil && !done {
		// The writes since the last tick go out before the restore
		// replaces the store (and its WALs): the old timeline stays
		// restorable to its last moment.
		if err := sh.Drain(ctx, s.Name()); err != nil {
			w.log.Warn("restore: not every segment reached the targets; they stay local and are sent later", "store", s.Name(), "err", err)
		}
	}
	if !done {
		if id, remote, err = w.restoreFrom(ctx, s, p.Params); err != nil {
			return outcome{}, err
		}
		if remote == nil {
			if id, err = usableBackup(s, id); err != nil {
				return outcome{}, err
			}
		}
	}
	if remote != nil {
		res, err = s.RestoreOnceFrom(ctx, p.JobID, remote.m, remote.t.OpenObject)
		if err != nil && p.Params.Target == "" && p.Params.BackupID == "" && errors.Is(err, store.ErrBadBackup) {
			// The newest backup was on a target, and it did not check out:
			// the newest local one still may.
			w.log.Error("the newest backup, on a target, does not restore; restoring the newest local one", "store", s.Name(),
				"target", remote.t.Name, "backup", remote.m.ID, "err", err)
			if id, err = usableBackup(s, ""); err == nil {
				res, err = s.RestoreOnce(ctx, p.JobID, id)
			}
		}
	} else {
		res, err = s.RestoreOnce(ctx, p.JobID, id)
	}
	if err != nil {
		return outcome{}, err
	}
	return w.restored(s, p, res, ""), nil
}

// restored is a restore's outcome: its result, store.restored, and for an
// automatic restore its notification; note adds to its summary.
func (w *Worker) restored(s Handle, p jobs.Payload, res store.RestoreResult, note string) outcome {
	// Viewers read results, events and browser notifications: the path of
	// the replaced generation is told relative to the data directory.
	if rel, err := filepath.Rel(filepath.Dir(s.Dir()), res.Quarantine); err == nil && res.Quarantine != "" && !strings.HasPrefix(rel, "..") {
		res.Quarantine = rel
	}
	e := jobs.Event{Type: jobs.EventStoreRestored, JobID: p.JobID, Kind: p.Kind, Store: p.Store, Trigger: p.Trigger,
		Actor: p.Actor, BackupID: res.BackupID, BackupAt: res.BackupAt, Quarantine: res.Quarantine}
	if res.Log != nil {
		e.RestoredTo = res.Log.At
	}
	result := restoreResult(res)
	out := outcome{Status: jobs.StatusRestored, Result: result, BackupID: res.BackupID, Events: []jobs.Event{e}}
	if p.Trigger == jobs.TriggerAuto { // a manual restore is what its operator asked for: no notification
		summary := fmt.Sprintf("store %s was restored automatically from backup %s: writes after %s are gone; the replaced generation is in quarantine at %s",
			p.Store, res.BackupID, res.BackupAt.UTC().Format(time.RFC3339), res.Quarantine)
		if res.Log != nil {
			since := res.BackupAt // nothing replayed: the backup is the last write known
			if res.Log.Batches > 0 {
				since = res.Log.LastWriteAt
			}
			summary = fmt.Sprintf("store %s was restored automatically to %s, when the damage was found: backup %s plus %d writes (%d batches) of the shipped commit log, %s of writes a restore of the backup alone would have lost; the last write recovered was committed at %s, so writes between then and %s were not shipped and are gone; the replaced generation is in quarantine at %s",
				p.Store, p.Params.At.UTC().Format(time.RFC3339Nano), res.BackupID, res.Log.Writes, res.Log.Batches,
				recovered(res), since.UTC().Format(time.RFC3339Nano), p.Params.At.UTC().Format(time.RFC3339Nano), res.Quarantine)
		}
		if note != "" {
			summary += "; " + note
		}
		out.Notes = append(out.Notes, jobs.Notification{ID: jobs.NotificationID(string(jobs.EventStoreRestored), p.JobID),
			Type: jobs.EventStoreRestored, Store: p.Store, JobID: p.JobID, Kind: p.Kind, Trigger: p.Trigger, Actor: p.Actor,
			BackupID: res.BackupID, BackupAt: res.BackupAt, Quarantine: res.Quarantine, At: time.Now().UTC(),
			Summary: summary})
	}
	return out
}

// recovered is how much time of writes a restore to a moment recovered
// beyond its backup.
func recovered(res store.RestoreResult) string {
	if res.Log == nil || res.Log.Batches == 0 || res.Log.LastWriteAt.Before(res.BackupAt) {
		return "0s"
	}
	return res.Log.LastWriteAt.Sub(res.BackupAt).Round(time.Millisecond).String()
}

// restoreToMoment is a restore job with Params.At: a backup plus the
// shipped commit log (package ship). An automatic restore the log cannot
// serve (no backup reaches the moment, or the log has a gap before it)
// restores the newest usable backup instead, and says so.
func (w *Worker) restoreToMoment(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	if w.cfg.Shipper == nil {
		return outcome{}, fmt.Errorf("store %s: a restore to a moment needs the commit log shipped (--backup-target, --ship-interval): %w", s.Name(), store.ErrNotShipping)
	}
	res, _, err := w.cfg.Shipper.RestoreAt(ctx, s.Name(), p.JobID, p.Params.At)
	if err == nil {
		return w.restored(s, p, res, ""), nil
	}
	if p.Trigger != jobs.TriggerAuto || !(errors.Is(err, ship.ErrNoPoint) || errors.Is(err, ship.ErrGap)) {
		return outcome{}, err
	}
	w.log.Error("automatic restore to a moment not possible; restoring the newest backup", "store", s.Name(), "at", p.Params.At, "err", err)
	id, berr := usableBackup(s, "")
	if berr != nil {
		return outcome{}, errors.Join(err, berr)
	}
	res, err2 := s.RestoreOnce(ctx, p.JobID, id)
	if err2 != nil {
		return outcome{}, err2
	}
	return w.restored(s, p, res, fmt.Sprintf("the commit log could not reach the moment the damage was found (%v)", err)), nil
}

// usableBackup returns the id of the backup a restore uses: id when that
// backup is usable, or the newest usable one when id is empty.
func usableBackup(s Handle, id string) (string, error) {
	infos, err := s.Backups()
	if err != nil {
		return "", err
	}
	backups := backupSummaries(infos)
	if id == "" {
		b, ok := jobs.NewestUsable(backups)
		if !ok {
			return "", fmt.Errorf("store %s: %w: no backup is verified and not marked bad", s.Name(), store.ErrNoBackup)
		}
		return b.ID, nil
	}
	i := slices.IndexFunc(backups, func(b jobs.BackupSummary) bool { return b.ID == id })
	switch {
	case i < 0:
		return "", fmt.Errorf("%w %q of store %s", store.ErrUnknownBackup, id, s.Name())
	case backups[i].Bad:
		return "", fmt.Errorf("%w %s: %s", store.ErrBadBackup, id, backups[i].Error)
	case !backups[i].Usable():
		return "", fmt.Errorf("backup %s of store %s: %w: it was never verified", id, s.Name(), store.ErrNoBackup)
	}
	return id, nil
}

// The worker publishes and reports what the store package measured, in
// jobs' types: store knows nothing of Redis or of other processes.

func storeStatus(node string, st store.Stats, backups []store.BackupInfo, at time.Time) jobs.StoreStatus {
	return jobs.StoreStatus{Node: node, Stats: storeStats(st), Backups: backupSummaries(backups), At: at}
}

func storeStats(st store.Stats) jobs.StoreStats {
	out := jobs.StoreStats{Name: st.Name, State: jobs.StoreState(st.State.String()), Error: st.Error, NotOwner: st.NotOwner,
		DiskBytes: st.DiskBytes, LiveBytes: st.LiveBytes, EstimatedKeys: st.EstimatedKeys, ReadAmp: st.ReadAmp,
		L0Sublevels: st.L0Sublevels, Tombstones: st.Tombstones, GarbagePointBytes: st.GarbagePointBytes,
		GarbageRangeBytes: st.GarbageRangeBytes, AboveBottomBytes: st.AboveBottomBytes, ReclaimableBytes: st.ReclaimableBytes,
		StatsComplete: st.StatsComplete, LastCompaction: st.LastCompaction, LastVerify: st.LastVerify, BackgroundErrors: st.BackgroundErrors}
	if st.Levels != nil {
		out.Levels = make([]jobs.LevelStats, len(st.Levels))
		for i, l := range st.Levels {
			out.Levels[i] = jobs.LevelStats{Level: l.Level, Tables: l.Tables, Bytes: l.Bytes, Sublevels: l.Sublevels}
		}
	}
	return out
}

// backupSummaries keeps nil nil: a store without a backup directory
// publishes no backups field.
func backupSummaries(bs []store.BackupInfo) []jobs.BackupSummary {
	if bs == nil {
		return nil
	}
	out := make([]jobs.BackupSummary, len(bs))
	for i, b := range bs {
		out[i] = backupSummary(b)
	}
	return out
}

func backupSummary(b store.BackupInfo) jobs.BackupSummary {
	out := jobs.BackupSummary{ID: b.ID, Store: b.Store, CreatedAt: b.CreatedAt, FormatVersion: b.FormatVersion, Keys: b.Keys,
		Bytes: b.Bytes, NewBytes: b.NewBytes, Fingerprint: b.Fingerprint, VerifiedAt: b.VerifiedAt, Bad: b.Bad, Error: b.Error,
		Timeline: b.Timeline, LogSeq: b.LogSeq, LogAt: b.LogAt}
	out.Files = backupFiles(b.Files)
	return out
}

// backupFiles is a backup's file list as jobs has it; nil stays nil.
func backupFiles(fs []store.BackupFile) []jobs.BackupFile {
	if fs == nil {
		return nil
	}
	out := make([]jobs.BackupFile, len(fs))
	for i, f := range fs {
		out[i] = jobs.BackupFile{Name: f.Name, Size: f.Size, SHA256: f.SHA256, Shared: f.Shared, Fingerprint: f.Fingerprint}
	}
	return out
}

func compactResult(r store.CompactResult) jobs.CompactResult {
	return jobs.CompactResult{Outcome: jobs.CompactOutcome(r.Outcome),
		Decision:    jobs.CompactDecision{Compact: r.Decision.Compact, Reason: r.Decision.Reason, Stats: storeStats(r.Decision.Stats)},
		BytesBefore: r.BytesBefore, BytesAfter: r.BytesAfter, Duration: r.Duration}
}

func backupResult(r store.BackupResult) jobs.BackupResult {
	t := r.Timing
	return jobs.BackupResult{Backup: backupSummary(r.Backup), Copied: r.Copied, Shared: r.Shared, Reread: r.Reread, Pruned: r.Pruned,
		Timing: jobs.BackupTiming{Checkpoint: t.Checkpoint, Copy: t.Copy, Hash: t.Hash, FileSync: t.FileSync, Validate: t.Validate, Publish: t.Publish},
		Took:   r.Took}
}

func verifyCheck(r store.VerifyResult) *jobs.VerifyCheck {
	return &jobs.VerifyCheck{Files: r.Files, Bytes: r.Bytes, Points: r.Points, Deep: r.Deep, Duration: r.Duration}
}

func restoreResult(r store.RestoreResult) jobs.RestoreResult {
	t := r.Timing
	out := jobs.RestoreResult{Replayed: r.Replayed, BackupID: r.BackupID, BackupAt: r.BackupAt, Quarantine: r.Quarantine,
		Timing: jobs.RestoreTiming{Fence: t.Fence, Stage: t.Stage, Hash: t.Hash, Sync: t.Sync, Replay: t.Replay, Verify: t.Verify, Swap: t.Swap, Reopen: t.Reopen},
		Took:   r.Took}
	if l := r.Log; l != nil {
		out.Log = &jobs.RestoredLog{At: l.At, Batches: l.Batches, Writes: l.Writes, Through: l.Through, LastWriteAt: l.LastWriteAt, Timeline: l.Timeline}
	}
	return out
}
