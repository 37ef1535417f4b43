package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
	"storekeeper/store"
)

// Corruption, however found (a verify, Pebble's corruption event, a job
// failing with a corruption error, an open that failed for missing or
// mis-sized files), reaches the registry's OnCorrupt once per store until
// it is restored. The worker turns it into one incident: store.corrupt
// with the evidence and what is done about it, a notification, and, when
// the policy allows, an automatic restore from the newest verified backup.

// incidents collects stores found corrupt; the listener must not block.
type incidents struct {
	mu      sync.Mutex
	pending map[string]error
	wake    chan struct{}
}

func (in *incidents) add(store string, err error) {
	in.mu.Lock()
	in.pending[store] = err
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

func (in *incidents) take() map[string]error {
	in.mu.Lock()
	defer in.mu.Unlock()
	p := in.pending
	in.pending = map[string]error{}
	return p
}

// incidentLoop handles corruption until ctx ends.
func (w *Worker) incidentLoop(ctx context.Context) {
	for {
		for name, evidence := range w.incidents.take() {
			if err := w.handleCorrupt(ctx, name, evidence); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error("handling a corrupt store failed; retrying", "store", name, "err", err)
				w.incidents.add(name, evidence)
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

// breakerScript admits an automatic restore when fewer than ARGV[2] were
// admitted in the 24 h before ARGV[1] (ms), and records it.
var breakerScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 86400000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
`)

func (w *Worker) handleCorrupt(ctx context.Context, name string, evidence error) error {
	now := time.Now().UTC()
	first, err := w.rdb.SetNX(ctx, jobs.IncidentKey(name), now.Format(time.RFC3339Nano)+" "+evidence.Error(), 0).Result()
	if err != nil {
		return err
	}
	log := w.log.With("store", name)
	if !first {
		log.Info("corruption already reported for this store; waiting for a restore", "evidence", evidence)
		return nil
	}
	action, backupID, restoreJob, why, err := w.decideRestore(ctx, name, now)
	if err != nil {
		w.rdb.Del(context.WithoutCancel(ctx), jobs.IncidentKey(name)) // decide again on the retry
		return err
	}
	ev := jobs.Event{Type: jobs.EventStoreCorrupt, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem,
		Error: evidence.Error(), Action: action, RestoreJobID: restoreJob, BackupID: backupID, At: now}
	summary := fmt.Sprintf("store %s is corrupt (%v); %s", name, evidence, why)
	n := jobs.Notification{ID: jobs.NotificationID(string(jobs.EventStoreCorrupt), name, now.Format(time.RFC3339Nano)),
		Type: jobs.EventStoreCorrupt, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem,
		Error: evidence.Error(), Summary: summary, Action: action, RestoreJobID: restoreJob, BackupID: backupID, At: now}
	if err := w.announce(ctx, ev, n); err != nil {
		return err
	}
	log.Error("store is corrupt", "evidence", evidence, "action", action, "restore_job", restoreJob, "backup", backupID)
	return nil
}

// decideRestore applies the automatic restore policy and, when it allows,
// enqueues the restore. why is the human half of the summary.
func (w *Worker) decideRestore(ctx context.Context, name string, now time.Time) (action, backupID, jobID, why string, err error) {
	if w.cfg.AutoRestore == "off" {
		return ActionPolicyOff, "", "", "automatic restore is off: the store stays corrupt until restored by hand", nil
	}
	paused, err := jobs.IsPaused(ctx, w.rdb, name)
	if err != nil {
		return "", "", "", "", err
	}
	if paused {
		return ActionPaused, "", "", "the store is paused: no automatic restore; resume it or restore by hand", nil
	}
	s, err := w.cfg.Registry.Store(name)
	if err != nil {
		return "", "", "", "", err
	}
	backups, err := s.Backups()
	if err != nil && !errors.Is(err, store.ErrNoBackupDir) {
		return "", "", "", "", err
	}
	var newest *store.BackupInfo
	for i := range backups { // newest first
		if !backups[i].Bad && !backups[i].VerifiedAt.IsZero() {
			newest = &backups[i]
			break
		}
	}
	if newest == nil {
		return ActionNoBackup, "", "", "there is no verified backup to restore from: the store stays corrupt", nil
	}
	ms := now.UnixMilli()
	ok, err := breakerScript.Run(ctx, w.rdb, []string{jobs.AutoRestoresKey(name)}, ms, w.cfg.AutoRestoreLimit, strconv.FormatInt(ms, 10)+":"+w.lease.Instance).Int()
	if err != nil {
		return "", "", "", "", err
	}
	if ok == 0 {
		return ActionBreakerOpen, newest.ID, "", fmt.Sprintf("%d automatic restores in the last 24 h reached the limit: the store stays corrupt until restored by hand", w.cfg.AutoRestoreLimit), nil
	}
	res, err := w.jobs.Enqueue(ctx, jobs.Request{Kind: jobs.KindRestore, Store: name, Params: jobs.Params{BackupID: newest.ID},
		Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem})
	if errors.Is(err, jobs.ErrRestoreInProgress) {
		return ActionRestoreInProgress, newest.ID, "", "a restore is already in progress", nil
	}
	if err != nil {
		w.rdb.ZRem(context.WithoutCancel(ctx), jobs.AutoRestoresKey(name), strconv.FormatInt(ms, 10)+":"+w.lease.Instance)
		return "", "", "", "", err
	}
	why = fmt.Sprintf("restoring automatically from backup %s taken at %s (writes after it will be lost; the damaged generation is kept in quarantine)",
		newest.ID, newest.CreatedAt.UTC().Format(time.RFC3339))
	return ActionAutoRestore, newest.ID, res.Record.ID, why, nil
}

// announce appends ev and queues n for the sinks, atomically.
func (w *Worker) announce(ctx context.Context, ev jobs.Event, n jobs.Notification) error {
	args, err := jobs.AppendArgs(jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, ev)
	if err != nil {
		return err
	}
	push := jobs.OutboxPush(n)
	pipe := w.rdb.TxPipeline()
	pipe.XAdd(ctx, args)
	pipe.LPush(ctx, push.Key, push.Value)
	_, err = pipe.Exec(ctx)
	return err
}
