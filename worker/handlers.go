package worker

import (
	"context"
	"errors"

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

// verifyJob succeeds when it finds corruption (it did its job), with
// result corrupt and a store.corrupt event.
func verifyJob(ctx context.Context, s *store.Store, p jobs.Payload) (outcome, error) {
	res, err := s.Verify(ctx, store.VerifyOptions{Deep: p.Params.Deep})
	if errors.Is(err, store.ErrCorrupt) {
		e := jobs.Event{Type: jobs.EventStoreCorrupt, JobID: p.JobID, Kind: p.Kind, Store: p.Store, Trigger: p.Trigger, Actor: p.Actor, Error: err.Error()}
		return outcome{Status: jobs.StatusCorrupt, Reason: err.Error(), Result: map[string]string{"corrupt": err.Error()}, Events: []jobs.Event{e}}, nil
	}
	if err != nil {
		return outcome{}, err
	}
	return outcome{Status: jobs.StatusVerified, Result: res}, nil
}

func restoreJob(ctx context.Context, s *store.Store, p jobs.Payload) (outcome, error) {
	res, err := s.Restore(ctx, p.Params.BackupID)
	if err != nil {
		return outcome{}, err
	}
	e := jobs.Event{Type: jobs.EventStoreRestored, JobID: p.JobID, Kind: p.Kind, Store: p.Store, Trigger: p.Trigger,
		Actor: p.Actor, BackupID: res.BackupID, BackupAt: res.BackupAt, Quarantine: res.Quarantine}
	return outcome{Status: jobs.StatusRestored, Result: res, BackupID: res.BackupID, Events: []jobs.Event{e}}, nil
}
