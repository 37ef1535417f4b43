package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"storekeeper/jobs"
	"storekeeper/store"
)

func compactJob(ctx context.Context, s *store.Store, p jobs.Payload) (outcome, error) {
	res, err := s.Compact(ctx, store.CompactOptions{Force: p.Params.Force, DryRun: p.Params.DryRun})
	if err != nil {
		return outcome{}, err
	}
	status := map[store.Outcome]jobs.HistoryStatus{store.Compacted: jobs.StatusCompacted, store.Skipped: jobs.StatusSkipped, store.DryRun: jobs.StatusDryRun}[res.Outcome]
	return outcome{Status: status, Reason: res.Decision.Reason, Result: res, BytesBefore: res.BytesBefore, BytesAfter: res.BytesAfter}, nil
}

func backupJob(ctx context.Context, s *store.Store, _ jobs.Payload) (outcome, error) {
	res, err := s.Backup(ctx)
	if err != nil {
		return outcome{}, err
	}
	return outcome{Status: jobs.StatusBackedUp, Result: res, BytesAfter: uint64(res.Backup.Bytes), BackupID: res.Backup.ID}, nil
}

// verifyJob checks the live store, then its newest backup not yet known
// bad. Finding corruption is the job done: a corrupt live store succeeds
// with status corrupt (the store reports it, and the worker's incident
// handling emits store.corrupt and decides the restore); a corrupt backup
// is marked bad, emits backup.corrupt and notifies, and never touches the
// live store.
func verifyJob(ctx context.Context, s *store.Store, p jobs.Payload) (outcome, error) {
	res, err := s.Verify(ctx, store.VerifyOptions{Deep: p.Params.Deep})
	if errors.Is(err, store.ErrCorrupt) {
		return outcome{Status: jobs.StatusCorrupt, Reason: err.Error(), Result: map[string]string{"corrupt": err.Error()}}, nil
	}
	if err != nil {
		return outcome{}, err
	}
	out := outcome{Status: jobs.StatusVerified}
	result := map[string]any{"live": res}
	out.Result = result
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
			result["backup"] = map[string]string{"id": b.ID, "bad": err.Error()}
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
		result["backup"] = bres
		break
	}
	return out, nil
}

func restoreJob(ctx context.Context, s *store.Store, p jobs.Payload) (outcome, error) {
	res, err := s.Restore(ctx, p.Params.BackupID)
	if err != nil {
		return outcome{}, err
	}
	// Viewers read results, events and browser notifications: the path of
	// the replaced generation is told relative to the data directory.
	if rel, err := filepath.Rel(filepath.Dir(s.Dir()), res.Quarantine); err == nil && res.Quarantine != "" && !strings.HasPrefix(rel, "..") {
		res.Quarantine = rel
	}
	e := jobs.Event{Type: jobs.EventStoreRestored, JobID: p.JobID, Kind: p.Kind, Store: p.Store, Trigger: p.Trigger,
		Actor: p.Actor, BackupID: res.BackupID, BackupAt: res.BackupAt, Quarantine: res.Quarantine}
	out := outcome{Status: jobs.StatusRestored, Result: res, BackupID: res.BackupID, Events: []jobs.Event{e}}
	if p.Trigger == jobs.TriggerAuto { // a manual restore is what its operator asked for: no notification
		out.Notes = append(out.Notes, jobs.Notification{ID: jobs.NotificationID(string(jobs.EventStoreRestored), p.JobID),
			Type: jobs.EventStoreRestored, Store: p.Store, JobID: p.JobID, Kind: p.Kind, Trigger: p.Trigger, Actor: p.Actor,
			BackupID: res.BackupID, BackupAt: res.BackupAt, Quarantine: res.Quarantine, At: time.Now().UTC(),
			Summary: fmt.Sprintf("store %s was restored automatically from backup %s: writes after %s are gone; the replaced generation is in quarantine at %s",
				p.Store, res.BackupID, res.BackupAt.UTC().Format(time.RFC3339), res.Quarantine)})
	}
	return out, nil
}
