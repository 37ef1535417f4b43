package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// Corruption, however found (a verify, Pebble's corruption event, a job
// failing with a corruption error, an open that failed for missing or
// mis-sized files), reaches the registry's OnCorrupt once per store until
// it is restored. The worker turns it into one incident: store.corrupt
// with the evidence and what is done about it, a notification, and, when
// the policy allows, an automatic restore from the newest verified backup.

// incidents collects stores found corrupt; the listener must not block.
// Each pending store keeps one incident id (and the id its automatic
// restore would have) across the retries of its handling, so that a retry
// repeats the same steps rather than making new ones.
type incidents struct {
	mu      sync.Mutex
	pending map[string]*incident
	wake    chan struct{}
}

type incident struct {
	id        string
	restoreID string
	evidence  error
	found     time.Time // when the damage was reported: the moment an automatic restore to a point rebuilds
}

func (in *incidents) add(store string, err error) {
	in.mu.Lock()
	if in.pending[store] == nil {
		in.pending[store] = &incident{id: "i" + jobs.NewID()[1:], restoreID: jobs.NewID(), evidence: err, found: time.Now().UTC()}
	}
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// retry puts back an incident whose handling failed.
func (in *incidents) retry(store string, inc *incident) {
	in.mu.Lock()
	if in.pending[store] == nil {
		in.pending[store] = inc
	}
	in.mu.Unlock()
}

func (in *incidents) take() map[string]*incident {
	in.mu.Lock()
	defer in.mu.Unlock()
	p := in.pending
	in.pending = map[string]*incident{}
	return p
}

// incidentLoop handles corruption until ctx ends.
func (w *Worker) incidentLoop(ctx context.Context) {
	for {
		for name, inc := range w.incidents.take() {
			if err := w.handleCorrupt(ctx, name, inc); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error("handling a corrupt store failed; retrying", "store", name, "err", err)
				w.incidents.retry(name, inc)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.incidents.wake:
		}
	}
}

// Actions on a corrupt store, as store.corrupt and its notification name them.
const (
	ActionAutoRestore       = "auto_restore"
	ActionRestoreInProgress = "restore_in_progress"
	ActionPolicyOff         = "policy_off"
	ActionPaused            = "paused"
	ActionNoBackup          = "no_backup"
	ActionBreakerOpen       = "breaker_open"
)

// handleCorrupt reports one incident: it decides the action (and enqueues
// the automatic restore, under an id chosen once per incident), then
// writes the incident, store.corrupt and its notification in one step.
// Every step is safe to repeat, so a failure anywhere is retried from the
// start without doubling anything; an incident already reported (by this
// process or an earlier one) is not reported again, and its restore, if
// one was decided, is made sure of.
func (w *Worker) handleCorrupt(ctx context.Context, name string, inc *incident) error {
	log := w.log.With("store", name)
	if !w.serving(name) {
		log.Warn("corrupt store not handled: this node lost it to another node", "evidence", inc.evidence)
		return nil
	}
	if raw, ok, err := jobsdb.ReportedIncident(ctx, w.rdb, name); err != nil {
		return err
	} else if ok {
		return w.reported(ctx, name, raw, inc)
	}
	now := time.Now().UTC()
	action, params, restoreJob, why, err := w.decideRestore(ctx, name, inc, now)
	if err != nil {
		return err
	}
	backupID := params.BackupID
	evidence := inc.evidence.Error()
	rec := jobs.Incident{ID: inc.id, Evidence: evidence, Action: action, RestoreJobID: restoreJob, BackupID: backupID, RestoreAt: params.At, Node: w.cfg.Node, At: now}
	ev := jobs.Event{Type: jobs.EventStoreCorrupt, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem,
		Error: evidence, Action: action, RestoreJobID: restoreJob, BackupID: backupID, At: now}
	summary := fmt.Sprintf("store %s is corrupt (%v); %s", name, inc.evidence, why)
	n := jobs.Notification{ID: jobs.NotificationID(string(jobs.EventStoreCorrupt), name, inc.id),
		Type: jobs.EventStoreCorrupt, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem,
		Error: evidence, Summary: summary, Action: action, RestoreJobID: restoreJob, BackupID: backupID, At: now}
	value, _ := json.Marshal(rec)
	made, other, err := jobsdb.AnnounceIncident(ctx, w.rdb, name, string(value), w.cfg.Jobs.EventsMaxLen, ev, &n)
	if err != nil {
		return err
	}
	if !made {
		// Reported meanwhile by another finding; the restore this one
		// enqueued (if any) is the same request, deduplicated.
		return w.reported(ctx, name, other, inc)
	}
	log.Error("store is corrupt", "evidence", inc.evidence, "action", action, "restore_job", restoreJob, "backup", backupID)
	return nil
}

// reported handles a finding on a store whose incident is already
// reported: nothing is announced again, but an automatic restore the
// incident decided is enqueued if it is missing (a process that stopped
// between the two steps).
func (w *Worker) reported(ctx context.Context, name, raw string, inc *incident) error {
	var rec jobs.Incident
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		w.log.Warn("unreadable incident record; treating the corruption as reported", "store", name, "err", err)
		return nil
	}
	if rec.ID != inc.id {
		w.log.Info("corruption already reported for this store; waiting for a restore", "store", name, "evidence", inc.evidence, "incident", rec.ID)
	}
	if rec.Action != ActionAutoRestore || rec.RestoreJobID == "" {
		return nil
	}
	if _, err := w.jobs.Get(ctx, rec.RestoreJobID); !errors.Is(err, jobs.ErrUnknownJob) {
		return err
	}
	p := jobs.Params{BackupID: rec.BackupID}
	if !rec.RestoreAt.IsZero() {
		p = jobs.Params{At: rec.RestoreAt}
	}
	_, err := w.jobs.Enqueue(ctx, jobs.Request{Kind: jobs.KindRestore, Store: name, Params: p,
		Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, JobID: rec.RestoreJobID})
	if errors.Is(err, jobs.ErrRestoreInProgress) {
		return nil
	}
	return err
}

// decideRestore applies the automatic restore policy and, when it allows,
// enqueues the restore: to the moment the damage was found when the
// store's commit log is shipped (a backup plus the log: almost nothing
// lost), else of the newest usable backup. why is the human half of the
// summary.
func (w *Worker) decideRestore(ctx context.Context, name string, inc *incident, now time.Time) (action string, p jobs.Params, jobID, why string, err error) {
	if w.cfg.AutoRestore == "off" {
		return ActionPolicyOff, p, "", "automatic restore is off: the store stays corrupt until restored by hand", nil
	}
	paused, err := jobsdb.IsPaused(ctx, w.rdb, name)
	if err != nil {
		return "", p, "", "", err
	}
	if paused {
		return ActionPaused, p, "", "the store is paused: no automatic restore; resume it or restore by hand", nil
	}
	s, err := w.stores.Store(name)
	if err != nil {
		return "", p, "", "", err
	}
	backups, err := s.Backups()
	if err != nil && !errors.Is(err, store.ErrNoBackupDir) {
		return "", p, "", "", err
	}
	newest, ok := jobs.NewestUsable(backupSummaries(backups))
	if !ok {
		return ActionNoBackup, p, "", "there is no verified backup to restore from: the store stays corrupt", nil
	}
	p.BackupID = newest.ID
	why = fmt.Sprintf("restoring automatically from backup %s taken at %s (writes after it will be lost; the damaged generation is kept in quarantine)",
		newest.ID, newest.CreatedAt.UTC().Format(time.RFC3339))
	if w.cfg.Shipper != nil {
		p = jobs.Params{At: inc.found}
		why = fmt.Sprintf("restoring automatically to %s, when the damage was found, from a backup and the shipped commit log (the damaged generation is kept in quarantine)",
			inc.found.Format(time.RFC3339Nano))
	}
	admitted, err := jobsdb.AdmitAutoRestore(ctx, w.rdb, name, now, w.cfg.AutoRestoreLimit, inc.id)
	if err != nil {
		return "", p, "", "", err
	}
	if !admitted {
		return ActionBreakerOpen, p, "", fmt.Sprintf("%d automatic restores in the last 24 h reached the limit: the store stays corrupt until restored by hand", w.cfg.AutoRestoreLimit), nil
	}
	res, err := w.jobs.Enqueue(ctx, jobs.Request{Kind: jobs.KindRestore, Store: name, Params: p,
		Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, JobID: inc.restoreID})
	if errors.Is(err, jobs.ErrRestoreInProgress) {
		return ActionRestoreInProgress, p, "", "a restore is already in progress", nil
	}
	if err != nil {
		return "", p, "", "", err // retried with the same incident: the same admission and job id
	}
	return ActionAutoRestore, p, res.Record.ID, why, nil
}
