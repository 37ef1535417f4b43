package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/store"
)

// Off-site copies (package offsite). A backup job publishes its backup
// locally, then uploads it to every target; its success is the local
// backup's: a target that is down or fails is reported in the result, and
// the next backup's upload sends what that target still lacks. A restore
// with a target fetches the backup from it into the local backups first,
// then restores it like any other.

// indexReadTimeout bounds reading a target's index when looking for a
// backup newer than the local ones.
const indexReadTimeout = 30 * time.Second

// errUnknownTarget: a restore names a target this worker does not have.
var errUnknownTarget = errors.New("unknown backup target")

// errNothingToReencrypt: a backup asked to reencrypt on a node without an
// encrypted target.
var errNothingToReencrypt = errors.New("no backup target is encrypted (--backup-encrypt-to)")

func (w *Worker) target(name string) (*offsite.Target, error) {
	for _, t := range w.cfg.Targets {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("%w %q: this worker has %d (--backup-target)", errUnknownTarget, name, len(w.cfg.Targets))
}

// targets is what this node knows of its stores' copies on the targets,
// published with each store's status: the newest backup each target
// holds, and since when uploads to it fail. A target's outage is
// notified once per node: down is when its uploads started failing.
type targets struct {
	mu     sync.Mutex
	stores map[string]map[string]jobs.TargetStatus // store -> target -> status
	down   map[string]time.Time                    // target -> failing since, on this node
	// collected: target -> when this node last collected it
	collected map[string]time.Time
}

// status is the store's copy on each of targets, as published, with
// whether the node encrypts what it uploads there.
func (ts *targets) status(storeName string, targets []*offsite.Target) []jobs.TargetStatus {
	if len(targets) == 0 {
		return nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]jobs.TargetStatus, 0, len(targets))
	for _, t := range targets {
		st := ts.stores[storeName][t.Name]
		enc := t.Encrypted()
		st.Target, st.Encrypted = t.Name, &enc
		out = append(out, st)
	}
	return out
}

func (ts *targets) set(storeName, target string, fn func(*jobs.TargetStatus)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.stores == nil {
		ts.stores = map[string]map[string]jobs.TargetStatus{}
	}
	if ts.stores[storeName] == nil {
		ts.stores[storeName] = map[string]jobs.TargetStatus{}
	}
	st := ts.stores[storeName][target]
	fn(&st)
	ts.stores[storeName][target] = st
}

// failed records an upload failure at now and reports whether it starts
// an outage of the target on this node (then since is now).
func (ts *targets) failed(target string, now time.Time) (since time.Time, starts bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.down == nil {
		ts.down = map[string]time.Time{}
	}
	if t, ok := ts.down[target]; ok {
		return t, false
	}
	ts.down[target] = now
	return now, true
}

func (ts *targets) succeeded(target string) {
	ts.mu.Lock()
	delete(ts.down, target)
	ts.mu.Unlock()
}

// targetNames are the configured targets' names, in order.
func (w *Worker) targetNames() []string {
	out := make([]string, len(w.cfg.Targets))
	for i, t := range w.cfg.Targets {
		out[i] = t.Name
	}
	return out
}

// learnTargets reads, for each store this node owns, the newest backup
// each target holds (its index), so that the published status tells the
// targets' lag before the first upload. Best effort, in the background.
func (w *Worker) learnTargets(ctx context.Context) {
	for _, name := range w.stores.Names() {
		if !w.learnStoreTargets(ctx, name) {
			return
		}
		w.publishSoon(name)
	}
}

// learnStoreTargets reads the newest backup each target holds of one
// store into its status (for the caller to publish); false when ctx
// ended.
func (w *Worker) learnStoreTargets(ctx context.Context, name string) bool {
	for _, t := range w.cfg.Targets {
		ictx, cancel := context.WithTimeout(ctx, indexReadTimeout)
		entries, err := t.Backups(ictx, name)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err != nil {
			w.log.Warn("backup target's index not read", "store", name, "target", t.Name, "err", err)
			continue
		}
		if len(entries) > 0 {
			w.targets.set(name, t.Name, func(st *jobs.TargetStatus) {
				if entries[0].CreatedAt.After(st.BackupAt) {
					st.BackupID, st.BackupAt = entries[0].ID, entries[0].CreatedAt
				}
			})
		}
	}
	return true
}

// backupJob backs the store up, then uploads the backup to every target.
// A target's failure is in the result and the store's published status;
// the first one of an outage on this node is an event and a notification.
func (w *Worker) backupJob(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
	if p.Params.Reencrypt && !slices.ContainsFunc(w.cfg.Targets, (*offsite.Target).Encrypted) {
		// Refused before a backup is made that the job would then fail.
		return outcome{}, fmt.Errorf("reencrypt %s: %w", s.Name(), errNothingToReencrypt)
	}
	res, err := s.Backup(ctx)
	if err != nil {
		return outcome{}, err
	}
	out := outcome{Status: jobs.StatusBackedUp, BytesAfter: uint64(res.Backup.Bytes), BackupID: res.Backup.ID}
	result := backupResult(res)
	m := res.Backup.BackupManifest
	for _, t := range w.cfg.Targets {
		up, err := t.Upload(ctx, s, m, func(done, total int64) {
			store.ReportProgress(ctx, "uploading:"+t.Name, done, total)
		})
		if err == nil {
			w.targets.succeeded(t.Name)
			w.targets.set(s.Name(), t.Name, func(st *jobs.TargetStatus) {
				st.BackupID, st.BackupAt, st.Error, st.FailingSince = m.ID, m.CreatedAt, "", time.Time{}
			})
			// The target keeps what the local directory keeps.
			if up.Pruned, err = t.Prune(ctx, s.Name(), func(c map[string]time.Time) map[string]bool { return s.Keep(c, time.Now()) }); err != nil {
				w.log.Warn("backups on a target not pruned; the next backup tries again", "store", s.Name(), "target", t.Name, "err", err)
			}
			w.collect(ctx, t)
			result.Targets = append(result.Targets, targetUpload(up))
			continue
		}
		result.Targets = append(result.Targets, targetUpload(up))
		w.log.Warn("backup not uploaded to a target; the next backup sends what it lacks", "store", s.Name(),
			"backup", m.ID, "target", t.Name, "err", err)
		now := time.Now().UTC()
		since, starts := w.targets.failed(t.Name, now)
		w.targets.set(s.Name(), t.Name, func(st *jobs.TargetStatus) {
			st.Error = err.Error()
			if st.FailingSince.IsZero() {
				st.FailingSince = now
			}
		})
		if starts {
			e := jobs.Event{Type: jobs.EventBackupTargetFailed, JobID: p.JobID, Kind: p.Kind, Store: p.Store, Trigger: p.Trigger,
				Actor: p.Actor, BackupID: m.ID, BackupAt: m.CreatedAt, Target: t.Name, Error: err.Error()}
			out.Events = append(out.Events, e)
			out.Notes = append(out.Notes, jobs.Notification{ID: jobs.NotificationID(string(jobs.EventBackupTargetFailed), w.cfg.Node, t.Name, since.Format(time.RFC3339Nano)),
				Type: jobs.EventBackupTargetFailed, Store: p.Store, JobID: p.JobID, Kind: p.Kind, Trigger: p.Trigger, Actor: p.Actor,
				Node: w.cfg.Node, Error: err.Error(), BackupID: m.ID, BackupAt: m.CreatedAt, Target: t.Name, At: now,
				Summary: fmt.Sprintf("backup target %s: uploads from node %s fail (backup %s of %s is kept locally; later uploads catch up): %v",
					t.Name, w.cfg.Node, m.ID, s.Name(), err)})
		}
	}
	if p.Params.Reencrypt {
		if err := w.reencrypt(ctx, s.Name(), result.Targets); err != nil {
			return outcome{}, err
		}
	}
	out.Result = result
	return out, nil
}

// reencrypt rewrites the store's backups on every encrypted target for
// the current recipients, after this backup's upload, and notes it in
// ups (the upload results, in target order). It fails when any target
// fails (the operator asked for it). backupJob has checked that one is
// encrypted.
func (w *Worker) reencrypt(ctx context.Context, name string, ups []jobs.TargetUpload) error {
	var errs []error
	for i, t := range w.cfg.Targets {
		if !t.Encrypted() {
			continue
		}
		res, err := t.Reencrypt(ctx, name, func(done, total int64) {
			store.ReportProgress(ctx, "reencrypting:"+t.Name, done, total)
		})
		if i < len(ups) {
			ups[i].ReencryptedBackups, ups[i].ReencryptedObjects = res.Backups, res.Objects
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w.log.Info("backups on a target reencrypted for the current recipients", "store", name, "target", t.Name,
			"backups", res.Backups, "objects", res.Objects, "bytes", res.Bytes, "took", res.Took)
	}
	return errors.Join(errs...)
}

// remoteBackup is a backup a restore reads straight from a target.
type remoteBackup struct {
	t *offsite.Target
	m store.BackupManifest
}

// restoreFrom says what a restore restores: a local backup's id ("" is
// the newest usable one), or a backup on a target, read straight into the
// restore's staged copy. The job's target: its backup (its newest by
// default), the local copy when one is held and usable. With no target
// and no id: the newest across the local directory and every reachable
// target, the local one when equally new.
func (w *Worker) restoreFrom(ctx context.Context, s Handle, p jobs.Params) (string, *remoteBackup, error) {
	switch {
	case p.Target != "":
		t, err := w.target(p.Target)
		if err != nil {
			return "", nil, fmt.Errorf("%w: %w", store.ErrNoBackup, err)
		}
		return w.onTarget(ctx, s, t, p.BackupID)
	case p.BackupID == "" && len(w.cfg.Targets) > 0:
		if r, ok := w.newerOffsite(ctx, s); ok {
			return "", r, nil
		}
	}
	return p.BackupID, nil, nil
}

// onTarget returns backup id of the store (the target's newest when
// empty): its local copy when one is held and usable, else the target's.
func (w *Worker) onTarget(ctx context.Context, s Handle, t *offsite.Target, id string) (string, *remoteBackup, error) {
	id, err := newestOn(ctx, t, s.Name(), id)
	if err != nil {
		return "", nil, err
	}
	if local, err := usableBackup(s, id); err == nil {
		return local, nil, nil // held locally, and good: the local copy is used
	}
	m, err := targetManifest(ctx, t, s.Name(), id)
	if err != nil {
		return "", nil, err
	}
	return "", &remoteBackup{t: t, m: m}, nil
}

// newestOn returns id, or when it is empty the id of the newest backup
// of the store the target holds (store.ErrNoBackup when none).
func newestOn(ctx context.Context, t *offsite.Target, name, id string) (string, error) {
	if id != "" {
		return id, nil
	}
	entries, err := t.Backups(ctx, name)
	if err != nil {
		return "", err
	}
	if len(entries) == 0 {
		return "", fmt.Errorf("%w: target %s holds no backup of %s", store.ErrNoBackup, t.Name, name)
	}
	return entries[0].ID, nil
}

// targetManifest reads the manifest of backup id of the store on the
// target (its newest when id is empty); one the target lacks is
// store.ErrUnknownBackup.
func targetManifest(ctx context.Context, t *offsite.Target, name, id string) (store.BackupManifest, error) {
	id, err := newestOn(ctx, t, name, id)
	if err != nil {
		return store.BackupManifest{}, err
	}
	m, err := t.Manifest(ctx, name, id)
	if errors.Is(err, offsite.ErrNoBackup) {
		return m, fmt.Errorf("%w: %w", store.ErrUnknownBackup, err)
	}
	return m, err
}

// newerOffsite returns the newest backup the targets hold when it is newer
// than every usable local one; false when the local newest is as new (or
// no target answers, which is logged). A backup held locally is the local
// copy's business, even marked bad: the newest one the targets hold that
// is not held here is what counts.
func (w *Worker) newerOffsite(ctx context.Context, s Handle) (*remoteBackup, bool) {
	var local jobs.BackupSummary
	held := map[string]bool{}
	if infos, err := s.Backups(); err == nil {
		local, _ = jobs.NewestUsable(backupSummaries(infos))
		for _, b := range infos {
			held[b.ID] = true
		}
	}
	var best offsite.Entry
	var from *offsite.Target
	for _, t := range w.cfg.Targets {
		// A target that hangs must not hold up a restore (an automatic one
		// included) that a local backup can make.
		ictx, cancel := context.WithTimeout(ctx, indexReadTimeout)
		entries, err := t.Backups(ictx, s.Name())
		cancel()
		if err != nil {
			w.log.Warn("target not read for a newer backup; restoring from what is reachable", "store", s.Name(), "target", t.Name, "err", err)
			continue
		}
		for _, e := range entries { // newest first
			if held[e.ID] {
				continue
			}
			if e.CreatedAt.After(best.CreatedAt) {
				best, from = e, t
			}
			break
		}
	}
	if from == nil || !best.CreatedAt.After(local.CreatedAt) {
		return nil, false
	}
	ictx, cancel := context.WithTimeout(ctx, indexReadTimeout)
	m, err := from.Manifest(ictx, s.Name(), best.ID)
	cancel()
	if err != nil {
		w.log.Warn("newer backup on a target not read; restoring the newest local one", "store", s.Name(),
			"target", from.Name, "backup", best.ID, "err", err)
		return nil, false
	}
	return &remoteBackup{t: from, m: m}, true
}

func targetUpload(u offsite.Uploaded) jobs.TargetUpload {
	return jobs.TargetUpload{Target: u.Target, Objects: u.Objects, Skipped: u.Skipped, Bytes: u.Bytes, Took: u.Took,
		Error: u.Error, Complete: u.Complete, Pruned: u.Pruned}
}

// collectEvery is how often a node collects a target's unreferenced
// objects (offsite's Collect lists the whole target), after a backup.
const collectEvery = 6 * time.Hour

// collect runs a collection pass on t when this node has not for
// collectEvery; it is logged, never a failure of the backup.
func (w *Worker) collect(ctx context.Context, t *offsite.Target) {
	now := time.Now()
	w.targets.mu.Lock()
	if w.targets.collected == nil {
		w.targets.collected = map[string]time.Time{}
	}
	last := w.targets.collected[t.Name]
	due := now.Sub(last) >= collectEvery
	if due {
		w.targets.collected[t.Name] = now
	}
	w.targets.mu.Unlock()
	if !due {
		return
	}
	c, err := t.Collect(ctx, now, offsite.DefaultGrace)
	if err != nil {
		w.log.Warn("backup target's unreferenced objects not collected", "target", t.Name, "err", err)
		return
	}
	w.log.Info("backup target collected", "target", t.Name, "objects", c.Objects, "referenced", c.Referenced,
		"candidates", c.Candidates, "deleted", c.Deleted)
}
