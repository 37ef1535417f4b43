package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
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

// reported is o's events as node reports them, accepted under fence (0:
// a report recorded whoever holds the store).
func (o outcome) reported(node string, fence int64) []jobs.Event {
	var out []jobs.Event
	for _, e := range o.Events {
		e.Node, e.Fence = node, fence
		out = append(out, e)
	}
	return out
}

type handlerFunc func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error)

// attempt is one run of a job's handler: the job, its attempt number and
// the run token that fences every write the attempt makes.
type attempt struct {
	p        jobs.Payload
	n        int // 1 for the first attempt
	maxRetry int
	run      string
	log      *slog.Logger
}

func (a attempt) event(t jobs.EventType, node string) jobs.Event {
	return jobs.Event{Type: t, JobID: a.p.JobID, Kind: a.p.Kind, Store: a.p.Store, Node: node, Trigger: a.p.Trigger,
		Actor: a.p.Actor, Attempt: a.n, MaxRetry: a.maxRetry, At: time.Now().UTC()}
}

// process is the asynq handler: the lifecycle around one attempt.
//
// Every write it makes to the job's record is a keyspace.Change guarded by the
// attempt's run token, so that each step happens once however often Redis
// runs it: the start only for a record that is not terminal and that this
// run has not started; the end only while this run is the active one. A
// record found terminal (canceled, or settled by a reconciler while asynq
// still held the task) is not run: a terminal state is final.
//
// With Jobs.MinReplicas at least 1, the task is acknowledged to asynq
// (the handler returns nil, or an error asynq does not retry) only once
// the job's terminal state is confirmed on that many Redis replicas
// (confirmEnded); otherwise the handler returns an error and asynq keeps
// the task for another attempt, which finds the job ended and confirms
// again — or, if a failover lost the end, runs the job again.
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
	a := attempt{p: p, n: retried + 1, maxRetry: maxRetry, run: keyspace.NewRun()}
	a.log = w.log.With("job", p.JobID, "kind", p.Kind, "store", p.Store, "attempt", a.n)
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
		if holder, lost := w.own.holder(p.Store); lost {
			a.log.Warn("not starting a job on a store this node lost", "holder", holder.Node)
			return fmt.Errorf("%w: store %s is held by node %s", errLeaseLost, p.Store, holder.Node)
		}
		run = func(ctx context.Context) (outcome, error) {
			if p.Kind == jobs.KindAdopt {
				return handler(ctx, nil, p) // the store is not here yet
			}
			s, err := w.stores.Store(p.Store)
			if err != nil {
				return outcome{}, err
			}
			return handler(ctx, s, p)
		}
	}

	rec, err := w.start(ctx, a)
	if err != nil || rec == nil {
		return err
	}

	jobCtx, cancel := context.WithCancelCause(ctx)
	report, stopProgress := w.progressReporter(ctx, a)
	jobCtx = store.WithProgress(jobCtx, report)
	w.mu.Lock()
	w.running[p.JobID] = runningJob{store: p.Store, cancel: cancel}
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

	switch {
	case errors.Is(cause, errCanceled):
		// The record, locks, event and history were written by Cancel.
		// Pebble stops only compactions not yet started, so a cancel can
		// wait for the one running: say how long.
		a.log.Info("canceled job stopped; store released", "cancel_took", time.Since(canceledAt), "err", err)
		return w.confirmEnded(ctx, a)
	case errors.Is(cause, errInterrupted) || w.shuttingDown.Load() && err != nil && ctx.Err() != nil:
		// Stopped by shutdown (ours, or asynq's own cancel of the handler
		// context when its ShutdownTimeout ran out): not a failure.
		w.interrupted(ctx, *rec, a, "interrupted", "interrupted by shutdown")
		return err
	case errors.Is(cause, errLeaseLost):
		err = cause
	}
	if err == nil {
		return w.succeed(ctx, *rec, a, out)
	}
	return w.fail(ctx, *rec, a, err)
}

// start records the attempt's start. It returns nil and no error when the
// attempt must not run: the job is canceled or already ended, or a later
// attempt started.
func (w *Worker) start(ctx context.Context, a attempt) (*jobs.Record, error) {
	p := a.p
	startedAt := time.Now().UTC()
	ch := keyspace.Change{Op: "start:" + a.run, ReadFields: startReads,
		HSet: map[string]any{"state": string(jobs.StateActive), "attempts": a.n, "node": w.cfg.Node,
			"started_at": startedAt.Format(time.RFC3339Nano), "reason": "", "run": a.run, "pseq": 0}}
	if p.Store != "" && p.Kind != jobs.KindAdopt { // an adoption claims the lease once started
		lease, ok := w.own.lease(p.Store)
		if !ok {
			return nil, fmt.Errorf("%w: store %s", errLeaseLost, p.Store)
		}
		ch.Lease = lease
	}
	// A record still active is an attempt whose worker vanished (asynq
	// moved its task on without any middleware): end it first. Only a
	// later attempt can take over an active record (StartGuard), so a
	// first attempt does not send the entry.
	if a.n > 1 {
		lostAttempt := a.event(jobs.EventJobRetrying, w.cfg.Node)
		lostAttempt.Attempt, lostAttempt.Error = a.n-1, "attempt lost: its worker stopped without ending it"
		ch.IfWasActive = append(ch.IfWasActive, keyspace.EventEntry(w.cfg.Jobs.EventsMaxLen, lostAttempt))
	}
	started := a.event(jobs.EventJobStarted, w.cfg.Node)
	if ch.Lease != nil {
		started.Fence = ch.Lease.Token
	}
	ch.AddEvent(w.cfg.Jobs.EventsMaxLen, started)
	res, err := jobsdb.Apply(ctx, w.rdb, p.JobID, keyspace.StartGuard(a.run, a.n), ch)
	switch {
	case errors.Is(err, jobs.ErrUnknownJob):
		a.log.Error("task without a job record; dropping it")
		return nil, fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	case err != nil:
		return nil, err // Redis trouble: asynq retries the attempt
	case res.Fenced:
		w.checkLease(context.WithoutCancel(ctx), p.Store)
		return nil, fmt.Errorf("%w: store %s: the lease changed", errLeaseLost, p.Store)
	case !res.OK:
		a.log.Info("not running the job: it is canceled, ended or started by a later attempt", "state", res.Prior)
		if res.Prior.Terminal() {
			return nil, w.confirmEnded(ctx, a)
		}
		return nil, nil
	}
	rec, err := startedRecord(p, a, w.cfg.Node, startedAt, res.Fields)
	if err != nil {
		return nil, err
	}
	if w.started != nil {
		w.started(rec)
	}
	return &rec, nil
}

// startReads are the fields of a job's record its start reads back: what
// the attempt cannot know. The rest comes from the task's payload, which
// the record was made from, and from what the start writes.
var startReads = []string{"queue", "max_retry", "errors", "enqueued_at", "enq_ms"}

// startedRecord is job p's record as its attempt a's start left it (at,
// on node), from the fields read back (startReads, a map it adds to):
// what reading the whole record would return.
func startedRecord(p jobs.Payload, a attempt, node string, at time.Time, read map[string]string) (jobs.Record, error) {
	h := read // the fields read back; what the attempt knows is added to them
	if h == nil {
		h = map[string]string{}
	}
	h["id"], h["kind"], h["store"], h["node"], h["state"] = p.JobID, string(p.Kind), p.Store, node, string(jobs.StateActive)
	h["trigger"], h["actor"], h["batch_id"], h["run"] = string(p.Trigger), p.Actor, p.BatchID, a.run
	r, err := jobs.RecordFromHash(h)
	r.Params, r.Attempts, r.StartedAt = p.Params, a.n, at
	return r, err
}

// succeed records a job that did its work: stats first (the API never
// answers from older state), what the job found, job.succeeded, history.
func (w *Worker) succeed(ctx context.Context, rec jobs.Record, a attempt, out outcome) error {
	p := a.p
	now := time.Now().UTC()
	fin := keyspace.Change{Op: "end:" + a.run}
	var files *filesUpdate
	if p.Store != "" {
		lease, ok := w.own.lease(p.Store)
		if !ok {
			return w.failAfter(ctx, rec, a, fmt.Errorf("%w: store %s", errLeaseLost, p.Store), out)
		}
		fin.Lease = lease
		if js, up, serr := w.statsJSON(p.Store, lease); serr == nil {
			fin.SetStoreStatus(p.Store, js)
			if up != nil { // the backups changed (a backup's end), or their lists are due again
				fin.SetBackupFiles(p.Store, up.js)
				files = up
			}
		}
	}
	result, _ := json.Marshal(out.Result)
	found := out.reported(w.cfg.Node, fin.Fence())
	ev := a.event(jobs.EventJobSucceeded, w.cfg.Node)
	ev.Fence = fin.Fence()
	fin.End(rec, jobs.Terminal{State: jobs.StateSucceeded, Reason: out.Reason, Result: result, At: now, Before: found, Event: ev,
		History: jobs.HistoryEntry{Status: out.Status, Reason: out.Reason, BytesBefore: out.BytesBefore, BytesAfter: out.BytesAfter,
			BackupID: out.BackupID, Attempts: a.n, DurationMS: now.Sub(rec.StartedAt).Milliseconds(), Node: w.cfg.Node}}, w.cfg.Jobs)
	if p.Kind == jobs.KindRestore {
		fin.ClearIncident(p.Store) // a new corruption is a new incident
	}
	for _, n := range out.Notes {
		fin.Notify(n)
	}
	fin.Ack = w.ackFor(ctx)
	res, err := w.settle(ctx, a, keyspace.RunGuard(a.run), fin)
	if err != nil {
		return err
	}
	if res.OK && res.Acked {
		w.acked.add(fin.Ack.TaskKey())
	}
	if res.OK {
		w.files.published(files)
	}
	if res.Fenced {
		w.checkLease(context.WithoutCancel(ctx), p.Store)
		return w.failAfter(ctx, rec, a, fmt.Errorf("%w: store %s: the lease changed while the job ran", errLeaseLost, p.Store), out)
	}
	if !res.OK {
		a.log.Info("job did its work but was canceled meanwhile", "state", res.Prior)
		if res.Prior.Terminal() {
			w.reportDone(ctx, a, out)
		}
		return w.confirmEnded(ctx, a)
	}
	w.counters.succeeded(p.Kind, out.Status)
	a.log.Info("job succeeded", "status", out.Status, "reason", out.Reason, "took", now.Sub(rec.StartedAt), "replayed", res.Replayed)
	return w.confirmEnded(ctx, a)
}

// fail records a failed attempt: job.retrying, or, out of retries or not
// retryable, the job's end as failed (history, notification).
func (w *Worker) fail(ctx context.Context, rec jobs.Record, a attempt, err error) error {
	return w.failAfter(ctx, rec, a, err, outcome{})
}

// failAfter is fail for an attempt whose handler did its work (done) but
// whose success could not be recorded: the store's lease was lost
// meanwhile, so the end is refused. What the work did to the store
// happened all the same — a restore's swap has rolled it back — so the
// failure says so: done's events (store.restored, naming the backup and
// so the writes rolled back) go before job.retrying or job.failed, and
// its notifications (an automatic restore's) are sent. They carry no
// fencing token: like the failure itself, they are a report recorded
// whoever holds the store now, not an effect accepted under a claim. A
// later attempt that finds the work done (store.RestoreOnce) reports it
// again under its own claim.
func (w *Worker) failAfter(ctx context.Context, rec jobs.Record, a attempt, err error, done outcome) error {
	p := a.p
	now := time.Now().UTC()
	final := permanent(err) || a.n > a.maxRetry
	fin := keyspace.Change{Op: "end:" + a.run}
	// A failure is fenced like a success, except when the lease is why it
	// failed: then it is recorded whoever holds the store now. So is a
	// failed adoption's, which may have failed before it claimed the
	// lease, or let it go since.
	if p.Store != "" && p.Kind != jobs.KindAdopt && !errors.Is(err, errLeaseLost) {
		if lease, ok := w.own.lease(p.Store); ok {
			fin.Lease = lease
		} else {
			err = fmt.Errorf("%w: store %s (the job failed meanwhile: %w)", errLeaseLost, p.Store, err)
			return w.failAfter(ctx, rec, a, err, done)
		}
	}
	found := done.reported(w.cfg.Node, fin.Fence())
	for _, n := range done.Notes {
		fin.Notify(n)
	}
	if final {
		ev := a.event(jobs.EventJobFailed, w.cfg.Node)
		ev.Fence = fin.Fence()
		fin.End(rec, jobs.Terminal{State: jobs.StateFailed, Error: err.Error(), At: now, Before: found, Event: ev,
			History: jobs.HistoryEntry{Attempts: a.n, DurationMS: now.Sub(rec.StartedAt).Milliseconds(), Node: w.cfg.Node}}, w.cfg.Jobs)
		if notifiesFailure(p, err) {
			fin.Notify(w.failureNote(p.JobID, p.Kind, p.Store, p.Trigger, p.Actor, a.n, err.Error(), now))
		}
	} else {
		errs := append(append([]jobs.AttemptError(nil), rec.Errors...), jobs.AttemptError{Attempt: a.n, Error: err.Error(), At: now})
		errsJSON, _ := json.Marshal(errs)
		fin.HSet = map[string]any{"state": string(jobs.StateRetry), "errors": string(errsJSON)}
		if errors.Is(err, errLeaseLost) {
			fin.HSet["reason"] = "lease_lost"
		}
		for _, e := range found {
			e.At = now
			fin.AddEvent(w.cfg.Jobs.EventsMaxLen, e)
		}
		retrying := a.event(jobs.EventJobRetrying, w.cfg.Node)
		retrying.Error, retrying.Fence = err.Error(), fin.Fence()
		fin.AddEvent(w.cfg.Jobs.EventsMaxLen, retrying)
	}
	res, aerr := w.settle(ctx, a, keyspace.RunGuard(a.run), fin)
	switch {
	case aerr != nil:
		a.log.Error("recording a failed attempt", "err", aerr, "attempt_err", err)
		return err
	case res.Fenced:
		w.checkLease(context.WithoutCancel(ctx), p.Store)
		return w.failAfter(ctx, rec, a, fmt.Errorf("%w: store %s: the lease changed (the job failed meanwhile: %w)", errLeaseLost, p.Store, err), done)
	case !res.OK:
		a.log.Info("failed attempt not recorded: the job was canceled or ended meanwhile", "state", res.Prior, "err", err)
		if res.Prior.Terminal() {
			w.reportDone(ctx, a, done)
			return w.confirmEnded(ctx, a)
		}
		return nil
	}
	w.counters.attemptFailed(p.Kind, final)
	if final {
		a.log.Error("job failed", "err", err, "permanent", permanent(err))
		if p.Kind == jobs.KindNotify {
			// Logged and counted, never notified: no loop.
			_ = jobsdb.CountNotifyFailed(context.WithoutCancel(ctx), w.rdb)
		}
		if cerr := w.confirmEnded(ctx, a); cerr != nil {
			return cerr // not SkipRetry: asynq keeps the task (unless out of retries)
		}
		return fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	}
	a.log.Warn("job attempt failed; retrying", "err", err)
	return err
}

// interrupted records an attempt stopped by shutdown (or a restart): not
// a failure, asynq requeues the task.
func (w *Worker) interrupted(ctx context.Context, rec jobs.Record, a attempt, reason, msg string) {
	ch := keyspace.Change{Op: "end:" + a.run, HSet: map[string]any{"state": string(jobs.StateRetry), "reason": reason}}
	e := a.event(jobs.EventJobRetrying, w.cfg.Node)
	e.Error = msg
	ch.AddEvent(w.cfg.Jobs.EventsMaxLen, e)
	_, err := w.settle(ctx, a, keyspace.RunGuard(a.run), ch)
	a.log.Info("job interrupted; asynq requeues it", "reason", reason, "err", err)
}

// Patience with Redis for an attempt's end: the end is safe to send any
// number of times, and giving up would make asynq run the job again.
const (
	settlePatience = time.Minute
	settleBackoff  = 2 * time.Second
)

// settle applies an attempt's end, sending it again while Redis is
// unavailable, for up to settlePatience.
func (w *Worker) settle(ctx context.Context, a attempt, g keyspace.Guard, ch keyspace.Change) (jobsdb.Applied, error) {
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(settlePatience)
	wait := 50 * time.Millisecond
	for {
		res, err := jobsdb.Apply(ctx, w.rdb, a.p.JobID, g, ch)
		if err == nil || !errors.Is(err, jobs.ErrUnavailable) || time.Now().After(deadline) {
			return res, err
		}
		a.log.Warn("recording the attempt's end failed; sending it again", "err", err, "in", wait)
		time.Sleep(wait)
		wait = min(2*wait, settleBackoff)
	}
}

// confirmEnded makes sure the job's terminal state is on
// Jobs.MinReplicas Redis replicas (jobsdb.ConfirmEnded; nothing to do
// when it is 0) before the handler lets asynq drop the task. An error
// (jobsdb.ErrUnconfirmed) is returned to asynq, which keeps the task and
// retries it: that attempt finds the job ended and confirms again, or,
// when a failover lost the end, finds it unfinished and runs it again —
// an effect at least once, a terminal state exactly once. Such an error
// does not use up a retry (isFailure), but on the task's last attempt
// asynq archives it whatever the error: a job whose end a failover then
// loses is settled failed by the reconciler. A task whose end is
// confirmed by a later attempt is acknowledged as done, not archived,
// even when the job failed: the record, not asynq, says how it ended.
func (w *Worker) confirmEnded(ctx context.Context, a attempt) error {
	if w.cfg.Jobs.MinReplicas <= 0 {
		return nil
	}
	err := jobsdb.ConfirmEnded(context.WithoutCancel(ctx), w.rdb, a.p.JobID, w.cfg.Jobs.MinReplicas, w.cfg.Jobs.MinReplicasTimeout)
	if err != nil {
		a.log.Warn("the job's end is not confirmed on enough Redis replicas; asynq keeps the task, whose next attempt checks again", "err", err)
		return fmt.Errorf("job %s: end not confirmed: %w", a.p.JobID, err)
	}
	return nil
}

// reportDone records what an attempt did to its store (done's events and
// notifications: a restore's store.restored) when the job ended while it
// ran — settled by the reconciler after asynq gave its task up, or
// canceled — so that its end was refused. The job's state stays as it
// is, a terminal state being final; the report only appends, once (its
// Op), so that a rollback is never told by nothing. A later attempt that
// finds the job ended does not run, so none reports it again.
func (w *Worker) reportDone(ctx context.Context, a attempt, done outcome) {
	if len(done.Events) == 0 && len(done.Notes) == 0 {
		return
	}
	ch := keyspace.Change{Op: keyspace.NewOp("report:" + a.run)}
	now := time.Now().UTC()
	for _, e := range done.reported(w.cfg.Node, 0) {
		e.At = now
		ch.AddEvent(w.cfg.Jobs.EventsMaxLen, e)
	}
	for _, n := range done.Notes {
		ch.Notify(n)
	}
	res, err := w.settle(ctx, a, keyspace.EndedGuard(), ch)
	switch {
	case err != nil:
		a.log.Error("recording what the attempt did to the store failed", "err", err, "events", len(done.Events))
	case !res.OK:
		a.log.Error("what the attempt did to the store is not recorded: the job is not ended", "state", res.Prior)
	default:
		a.log.Warn("the job ended while this attempt ran; recorded what the attempt did to the store", "events", len(done.Events))
	}
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
