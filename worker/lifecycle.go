package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"storekeeper/jobs"
	"storekeeper/store"
)

// outcome is what a handler reports of a job that did its work.
type outcome struct {
	Status      jobs.HistoryStatus
	Reason      string
	Result      any
	BytesBefore uint64
	BytesAfter  uint64
	BackupID    string
	Events      []jobs.Event        // store.restored, backup.corrupt
	Notes       []jobs.Notification // sent with the job's end
}

type handlerFunc func(ctx context.Context, s *store.Store, p jobs.Payload) (outcome, error)

// process is the asynq handler: the lifecycle around one attempt.
func (w *Worker) process(ctx context.Context, task *asynq.Task) error {
	p, err := jobs.Decode(task.Payload())
	if err != nil {
		w.log.Error("dropping a task with a bad payload", "type", task.Type(), "err", err)
		return err // wraps SkipRetry: archived, never retried
	}
	if w.attemptDone != nil {
		defer w.attemptDone(p)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	attempt := retried + 1
	log := w.log.With("job", p.JobID, "kind", p.Kind, "store", p.Store, "attempt", attempt)
	ev := func(t jobs.EventType) jobs.Event {
		return jobs.Event{Type: t, JobID: p.JobID, Kind: p.Kind, Store: p.Store, Node: w.cfg.Node, Trigger: p.Trigger,
			Actor: p.Actor, Attempt: attempt, MaxRetry: maxRetry, At: time.Now().UTC()}
	}
	var run func(context.Context) (outcome, error)
	if p.Kind == jobs.KindNotify {
		run = func(ctx context.Context) (outcome, error) { return w.deliver(ctx, p) }
	} else {
		handler := w.handlers[p.Kind]
		if handler == nil {
			return fmt.Errorf("%w: no handler for %s on this node", asynq.SkipRetry, p.Kind)
		}
		// Wait for the store: one maintenance job per store at a time.
		slot := w.slot(p.Store)
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-slot }()
		run = func(ctx context.Context) (outcome, error) {
			s, err := w.cfg.Registry.Store(p.Store)
			if err != nil {
				return outcome{}, err
			}
			return handler(ctx, s, p)
		}
	}

	started := time.Now().UTC()
	start := jobs.Change{HSet: map[string]any{"state": string(jobs.StateActive), "attempts": attempt, "node": w.cfg.Node,
		"started_at": started.Format(time.RFC3339Nano), "reason": ""}, ReadBack: true}
	start.AddEntry(jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, ev(jobs.EventJobStarted))
	res, err := jobs.Apply(ctx, w.rdb, p.JobID, jobs.UnlessCanceled, start)
	if errors.Is(err, jobs.ErrUnknownJob) {
		log.Error("task without a job record; dropping it")
		return fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	}
	if err != nil {
		return err // Redis trouble: asynq retries the attempt
	}
	if !res.OK {
		log.Info("job was canceled; not running it", "state", res.Prior)
		return nil
	}
	rec := res.Record

	jobCtx, cancel := context.WithCancelCause(ctx)
	report, stopProgress := w.progressReporter(ctx, ev)
	jobCtx = store.WithProgress(jobCtx, report)
	w.mu.Lock()
	w.running[p.JobID] = cancel
	w.jobsWG.Add(1)
	w.mu.Unlock()
	out, err := run(jobCtx)
	stopProgress()
	w.mu.Lock()
	delete(w.running, p.JobID)
	canceledAt := w.canceledAt[p.JobID]
	delete(w.canceledAt, p.JobID)
	w.mu.Unlock()
	defer w.jobsWG.Done()
	cause := context.Cause(jobCtx)
	cancel(nil)
	now := time.Now().UTC()

	switch {
	case errors.Is(cause, errCanceled):
		// The record, locks, event and history were written by Cancel.
		// Pebble stops only compactions not yet started, so a cancel can
		// wait for the one running: say how long.
		log.Info("canceled job stopped; store released", "cancel_took", now.Sub(canceledAt), "err", err)
		return nil
	case errors.Is(cause, errInterrupted) || w.shuttingDown.Load() && err != nil && ctx.Err() != nil:
		// Stopped by shutdown (ours, or asynq's own cancel of the handler
		// context when its ShutdownTimeout ran out): not a failure.
		ch := jobs.Change{HSet: map[string]any{"state": string(jobs.StateRetry), "reason": "interrupted"}}
		_, aerr := jobs.Apply(context.WithoutCancel(ctx), w.rdb, p.JobID, jobs.UnlessCanceled, ch)
		log.Info("job interrupted by shutdown; asynq requeues it", "err", aerr)
		return err
	}

	var fin jobs.Change
	// The API must never answer from stale stats: publish them before the
	// job reads finished, in the same atomic step.
	if p.Store != "" {
		if js, serr := w.statsJSON(p.Store); serr == nil {
			fin.Set = append(fin.Set, jobs.SetKey{Key: jobs.StatsKey(p.Store), Value: js})
		}
	}
	hist := jobs.HistoryEntry{JobID: p.JobID, Kind: p.Kind, Store: p.Store, Trigger: p.Trigger, Actor: p.Actor,
		Attempts: attempt, DurationMS: now.Sub(started).Milliseconds(), Node: w.cfg.Node, At: now}
	if err == nil {
		result, _ := json.Marshal(out.Result)
		fin.HSet = map[string]any{"state": string(jobs.StateSucceeded), "result": string(result), "finished_at": now.Format(time.RFC3339Nano), "reason": out.Reason}
		fin.Finish(rec, w.cfg.Jobs.RecordRetention)
		// What the job found or did (store.restored, backup.corrupt) comes
		// first: job.succeeded is a job's last event.
		for _, e := range out.Events {
			e.Node, e.At = w.cfg.Node, now
			fin.AddEntry(jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, e)
		}
		done := ev(jobs.EventJobSucceeded)
		done.Result = result
		fin.AddEntry(jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, done)
		hist.Status, hist.Reason, hist.BytesBefore, hist.BytesAfter, hist.BackupID = out.Status, out.Reason, out.BytesBefore, out.BytesAfter, out.BackupID
		fin.AddEntry(jobs.HistoryStream, w.cfg.Jobs.HistoryMaxLen, hist)
		if p.Kind == jobs.KindRestore {
			fin.Del = append(fin.Del, jobs.IncidentKey(p.Store)) // a new corruption is a new incident
		}
		for _, n := range out.Notes {
			fin.Notify(n)
		}
		if _, aerr := jobs.Apply(context.WithoutCancel(ctx), w.rdb, p.JobID, jobs.UnlessCanceled, fin); aerr != nil {
			return aerr
		}
		w.counters.succeeded(p.Kind, out.Status)
		log.Info("job succeeded", "status", out.Status, "reason", out.Reason, "took", now.Sub(started))
		return nil
	}

	errs := append(rec.Errors, jobs.AttemptError{Attempt: attempt, Error: err.Error(), At: now})
	errsJSON, _ := json.Marshal(errs)
	final := permanent(err) || attempt > maxRetry
	failed := ev(jobs.EventJobRetrying)
	failed.Error = err.Error()
	fin.HSet = map[string]any{"state": string(jobs.StateRetry), "errors": string(errsJSON)}
	if final {
		failed.Type = jobs.EventJobFailed
		fin.HSet["state"], fin.HSet["finished_at"] = string(jobs.StateFailed), now.Format(time.RFC3339Nano)
		fin.Finish(rec, w.cfg.Jobs.RecordRetention)
		hist.Status, hist.Error = jobs.StatusFailed, err.Error()
		fin.AddEntry(jobs.HistoryStream, w.cfg.Jobs.HistoryMaxLen, hist)
		if notifiesFailure(p, err) {
			fin.Notify(w.failureNote(p.JobID, p.Kind, p.Store, p.Trigger, p.Actor, attempt, err.Error(), now))
		}
	}
	fin.AddEntry(jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, failed)
	if _, aerr := jobs.Apply(context.WithoutCancel(ctx), w.rdb, p.JobID, jobs.UnlessCanceled, fin); aerr != nil {
		log.Error("recording a failed attempt", "err", aerr)
	}
	w.counters.attemptFailed(p.Kind, final)
	if final {
		log.Error("job failed", "err", err, "permanent", permanent(err))
		if p.Kind == jobs.KindNotify {
			// Logged and counted, never notified: no loop.
			w.rdb.Incr(context.WithoutCancel(ctx), jobs.NotifyFailedKey)
		}
		return fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	}
	log.Warn("job attempt failed; retrying", "err", err)
	return err
}

// failureNote is the notification of a job's final failure. Its id comes
// from the job: whoever records the failure, it is the same notification.
func (w *Worker) failureNote(id string, kind jobs.Kind, st string, trigger jobs.Trigger, actor string, attempts int, reason string, at time.Time) jobs.Notification {
	return jobs.Notification{ID: jobs.NotificationID(string(jobs.EventJobFailed), id), Type: jobs.EventJobFailed,
		Store: st, JobID: id, Kind: kind, Trigger: trigger, Actor: actor, Node: w.cfg.Node, Error: reason,
		Summary: fmt.Sprintf("%s of store %s failed after %d attempt(s): %s", kind, st, attempts, reason), At: at}
}

// notifiesFailure says whether a job's final failure is notified: not a
// notify job's (it is counted, or notifications would loop), and not a
// maintenance job's that failed because the store is corrupt: the
// store.corrupt incident reports that, once. A failed restore always is.
func notifiesFailure(p jobs.Payload, err error) bool {
	switch {
	case p.Kind == jobs.KindNotify:
		return false
	case p.Kind != jobs.KindRestore && errors.Is(err, store.ErrCorrupt):
		return false
	}
	return true
}
