package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
)

var (
	errCanceled    = errors.New("job canceled")
	errInterrupted = errors.New("interrupted by shutdown")
)

// Worker runs this node's jobs: it owns the registry's stores (leases and
// heartbeat), consumes the node's queue and the notify queue, and turns
// every step of a job into its record, events and history.
type Worker struct {
	cfg    Config
	stores Stores // cfg.Stores, or cfg.Registry's
	rdb    redis.UniversalClient
	clock  clockwork.Clock
	log    *slog.Logger
	lease  jobs.Lease // this process's identity in leases; each store's value (token included) is in own
	own    ownership
	srv    *asynq.Server

	handlers  map[jobs.Kind]handlerFunc
	jobs      *jobsdb.Client
	sched     *scheduler
	incidents incidents
	targets   targets // the stores' copies on the backup targets
	drills    drills  // the stores' last restore drills
	counters  *counters
	node      jobs.NodeInfo
	unlisten  func()      // removes the corruption and state listeners
	changed   chan string // stores whose state changed: stats to publish now

	mu         sync.Mutex
	slots      map[string]chan struct{} // one job per store at a time
	running    map[string]runningJob    // job id -> its handler
	canceledAt map[string]time.Time     // job id -> when a cancel arrived
	jobsWG     sync.WaitGroup           // running handlers
	files      publishedFiles           // which file lists of its stores' backups this node published
	acked      ackedTasks               // tasks whose job's end did asynq's done

	shuttingDown atomic.Bool
	// beats counts heartbeats; knownNodes is how many nodes the last look
	// for down nodes found; beatPhase staggers the looks (checkNodes).
	beats      atomic.Uint64
	knownNodes atomic.Int64
	beatPhase  uint64

	// attemptDone, when set (benchmarks), is called as each attempt's
	// handling ends, after its records are written.
	attemptDone func(jobs.Payload)
	// started, when set (tests), gets the record each attempt's start
	// returns.
	started func(jobs.Record)
	// afterReclaim, when set (tests), runs between a renewal's new claim
	// of an expired lease and the claim's taking effect: the window in
	// which a refused write's lease check can give the store up.
	afterReclaim func(store, value string)
	// dispatched, when set (tests), sees each notification the outbox
	// dispatcher takes, in outbox order, before it is handed to sinks.
	dispatched func(jobs.Notification)
	// signals are the steps tests wait for; off (free) in production.
	signals signals

	stop func()         // ends heartbeat and cancel subscription
	bg   sync.WaitGroup // their goroutines
}

// New validates cfg and returns a Worker; Start runs it.
func New(cfg Config) (*Worker, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:        cfg,
		stores:     cfg.Stores,
		rdb:        cfg.Redis,
		clock:      cfg.Clock,
		log:        cfg.Logger.With("component", "worker", "node", cfg.Node),
		lease:      jobs.Lease{Node: cfg.Node, Host: hostname(), Instance: newInstance()},
		slots:      map[string]chan struct{}{},
		running:    map[string]runningJob{},
		own:        newOwnership(),
		canceledAt: map[string]time.Time{},
		jobs:       jobsdb.NewClient(cfg.Redis, cfg.Jobs),
		incidents:  incidents{pending: map[string]*incident{}, wake: make(chan struct{}, 1)},
		changed:    make(chan string, 64),
	}
	if w.clock == nil {
		w.clock = clockwork.NewRealClock()
	}
	if w.stores == nil {
		w.stores = registryStores{cfg.Registry}
	}
	h := fnv.New64a()
	h.Write([]byte(cfg.Node))
	w.beatPhase = h.Sum64() % 1024
	var err error
	if w.counters, err = newCounters(cfg.Metrics); err != nil {
		return nil, err
	}
	sched, err := newScheduler(w)
	if err != nil {
		return nil, err
	}
	w.sched = sched
	w.handlers = map[jobs.Kind]handlerFunc{
		jobs.KindCompact: compactJob,
		jobs.KindBackup:  w.backupJob,
		jobs.KindVerify:  verifyJob,
		jobs.KindRestore: w.restoreJob,
		jobs.KindDrill:   w.drillJob,
		jobs.KindAdopt:   w.adoptJob,
	}
	return w, nil
}

// signals are the internal steps a test can wait for (see
// internal/testsignal); a test initialises the ones it uses before Start.
type signals struct {
	// scheduleWaiting: a scheduler has armed its timer for the soonest
	// slot, the value (every slot due before it has been fired).
	scheduleWaiting testsignal.Signal[time.Time]
	// progressFlushed: a held-back progress window opened; true when a
	// report went out, false when there was nothing (left) to publish.
	progressFlushed testsignal.Signal[bool]
	// heartbeat: a heartbeat renewed the leases and beat the node.
	heartbeat testsignal.Signal[struct{}]
	// reconciled: the reconcile loop ran once, settling n jobs.
	reconciled testsignal.Signal[int]
}

// runningJob is a handler running an attempt.
type runningJob struct {
	store  string
	cancel context.CancelCauseFunc
}

// Start refuses a Redis whose key layout is another version
// (jobsdb.CheckLayout), then claims the stores (one that another live node
// holds is kept as lost, not served), announces the node (node.up),
// starts the heartbeat, the cancel listener, the scheduler, the
// corruption handler and the notification dispatcher, and starts
// consuming jobs.
func (w *Worker) Start(ctx context.Context) error {
	if err := jobsdb.CheckLayout(ctx, w.rdb); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if err := jobsdb.LoadScripts(ctx, w.rdb); err != nil {
		return fmt.Errorf("worker: load scripts: %w", err)
	}
	now := time.Now().UTC()
	w.node = jobs.NodeInfo{Node: w.cfg.Node, Host: w.lease.Host, Instance: w.lease.Instance, Stores: w.stores.Names(), StartedAt: now, At: now}
	// Before the claim publishes the stores' status: that would replace
	// the last drills a previous process published.
	w.learnDrills(ctx)
	if err := w.claim(ctx); err != nil {
		return err
	}
	if err := jobsdb.NodeUp(ctx, w.rdb, w.nodeInfo(), w.cfg.LeaseTTL, w.cfg.Jobs.EventsMaxLen); err != nil {
		return fmt.Errorf("worker: announce node: %w", err)
	}
	orphans, err := w.reclaimOrphans(ctx, jobs.NodeQueue(w.cfg.Node))
	if err != nil {
		return err
	}
	if len(orphans) > 0 {
		w.log.Warn("requeued tasks a previous process of this node left running", "jobs", orphans)
	}
	bgCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	w.stop = stop
	sub := jobsdb.SubscribeCancels(bgCtx, w.rdb)
	if _, err := sub.Receive(ctx); err != nil { // subscribed before any job runs
		stop()
		return fmt.Errorf("worker: subscribe to cancels: %w", err)
	}
	// Corruption found from now on arrives through the listener; what was
	// found before (an open that failed) is in the stores' state.
	unCorrupt := w.stores.OnCorrupt(w.incidents.add)
	unState := w.stores.OnStateChange(w.stateChanged)
	w.unlisten = func() { unCorrupt(); unState() }
	for _, name := range w.stores.Names() {
		if s, err := w.stores.Store(name); err == nil && w.serving(name) {
			if st, cause := s.State(); st == store.StateCorrupt {
				w.incidents.add(name, cause)
			}
		}
	}
	w.bg.Add(7)
	go func() { defer w.bg.Done(); w.heartbeat(bgCtx) }()
	go func() { defer w.bg.Done(); w.publishChanged(bgCtx) }()
	go func() { defer w.bg.Done(); w.reconcileLoop(bgCtx, w.cfg.ReconcileInterval) }()
	if len(w.cfg.Targets) > 0 {
		w.bg.Add(1)
		go func() { defer w.bg.Done(); w.learnTargets(bgCtx) }()
	}
	if w.cfg.Shipper != nil {
		w.cfg.Shipper.OnGap(w.shipGap)
		w.bg.Add(1)
		go func() { defer w.bg.Done(); w.cfg.Shipper.Run(bgCtx) }()
	}
	go func() { defer w.bg.Done(); defer sub.Close(); w.listenCancels(bgCtx, sub) }()
	go func() { defer w.bg.Done(); w.incidentLoop(bgCtx) }()
	go func() { defer w.bg.Done(); w.dispatchLoop(bgCtx) }()
	go func() { defer w.bg.Done(); w.sched.run(bgCtx) }()

	w.srv = asynq.NewServerFromRedisClient(asynqClient{w.rdb, &w.acked}, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   map[string]int{jobs.NodeQueue(w.cfg.Node): 10, jobs.NotifyQueue: 1},
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		RetryDelayFunc:           w.retryDelay,
		IsFailure:                isFailure,
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
	})
	if err := w.srv.Start(asynq.HandlerFunc(w.process)); err != nil {
		stop()
		w.bg.Wait()
		return fmt.Errorf("worker: start asynq server: %w", err)
	}
	w.log.Info("worker started", "stores", w.stores.Names(), "queue", jobs.NodeQueue(w.cfg.Node))
	return nil
}

// Healthy reports whether the worker is running: started and not shutting
// down (for /readyz).
func (w *Worker) Healthy() error {
	switch {
	case w.srv == nil:
		return errors.New("worker not started")
	case w.shuttingDown.Load():
		return errors.New("worker shutting down")
	}
	return nil
}

// Readiness is a worker-only process's /readyz: Redis answers a PING,
// the worker is Healthy, and it lost none of its stores to another node
// (a worker is there to serve its stores; one held elsewhere is served by
// nobody here). body is the answer's JSON: "ready", "checks" (each
// check's "ok" or what failed) and, when there are some, "lost_stores"
// (store -> the node holding it).
func (w *Worker) Readiness(ctx context.Context) (ready bool, body map[string]any) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	checks := map[string]string{"redis": "ok", "process": "ok"}
	ready = true
	if err := w.rdb.Ping(ctx).Err(); err != nil {
		checks["redis"], ready = err.Error(), false
	}
	if err := w.Healthy(); err != nil {
		checks["process"], ready = err.Error(), false
	}
	body = map[string]any{"checks": checks}
	if l := w.Lost(); len(l) > 0 {
		checks["stores"], ready = fmt.Sprintf("%d store(s) lost to other nodes", len(l)), false
		body["lost_stores"] = l
	}
	body["ready"] = ready
	return ready, body
}

// Shutdown is Stop with no deadline.
func (w *Worker) Shutdown() { _ = w.Stop(context.Background()) }

// Stop stops in this order: asynq's Shutdown first (it waits
// ShutdownTimeout, then requeues what is unfinished without counting a
// failure), then the handlers still running are cancelled and waited for;
// their records read retry, reason interrupted. When ctx ends first, Stop
// gives up waiting: it returns an error naming the jobs still running,
// whose tasks asynq requeues, and whose stores the caller must not close
// (a handler may still be using them; the process exits with them open).
// The caller closes the stores afterwards.
func (w *Worker) Stop(ctx context.Context) error {
	w.shuttingDown.Store(true)
	if w.srv != nil {
		done := make(chan struct{})
		go func() { w.srv.Shutdown(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	w.mu.Lock()
	for _, r := range w.running {
		r.cancel(errInterrupted)
	}
	w.mu.Unlock()
	drained := make(chan struct{})
	go func() { w.jobsWG.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		w.mu.Lock()
		var left []string
		for id, r := range w.running {
			left = append(left, id+" on store "+r.store)
		}
		w.mu.Unlock()
		slices.Sort(left)
		err = fmt.Errorf("worker: stopped waiting for %d running job(s) (%s): %w", len(left), strings.Join(left, ", "), context.Cause(ctx))
		w.log.Error("shutdown budget spent: abandoning running jobs; asynq requeues them", "jobs", left)
	}
	if w.unlisten != nil {
		w.unlisten()
	}
	if w.stop != nil {
		w.stop()
	}
	w.bg.Wait()
	w.log.Info("worker stopped")
	return err
}

// stateChanged is the registry's state hook: it logs the change and has
// the store's stats published at once, so that the API shows a store that
// became unavailable (an I/O error, a full disk: never restored
// automatically) or came back without waiting for a heartbeat. It must not
// block.
func (w *Worker) stateChanged(name string, st store.State, cause error) {
	switch st {
	case store.StateUnavailable:
		w.log.Error("store unavailable: not corruption; retrying the open with backoff, never restoring it", "store", name, "err", cause)
	case store.StateOpen:
		w.log.Info("store open", "store", name)
	}
	w.publishSoon(name)
}

// publishSoon asks for the store's status to be published now rather than
// at the next heartbeat (which publishes it anyway).
func (w *Worker) publishSoon(name string) {
	select {
	case w.changed <- name:
	default:
	}
}

// publishChanged publishes the stats of stores whose state changed.
func (w *Worker) publishChanged(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-w.changed:
			if check, ok := w.own.lease(name); ok {
				if err := w.publishStats(ctx, name, check); err != nil {
					w.log.Warn("publishing stats failed", "store", name, "err", err)
				}
			}
		}
	}
}

// cancelStore stops the handler running on a store, if any, with cause.
func (w *Worker) cancelStore(name string, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, r := range w.running {
		if r.store == name {
			w.log.Warn("stopping a running job", "job", id, "store", name, "cause", cause)
			r.cancel(cause)
		}
	}
}

func (w *Worker) listenCancels(ctx context.Context, sub *redis.PubSub) {
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			w.mu.Lock()
			r, ok := w.running[m.Payload]
			if ok {
				w.canceledAt[m.Payload] = time.Now()
			}
			w.mu.Unlock()
			if ok {
				w.log.Info("canceling running job", "job", m.Payload)
				r.cancel(errCanceled)
			}
		}
	}
}

// retryDelay is the backoff before a task's next attempt. A job that did
// not run because this node lost its store waits for leases rather than
// for the store: a lease period, doubling, so that it runs if the node
// holds the store again soon and otherwise fails, saying why, within a
// few minutes.
func (w *Worker) retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if errors.Is(err, errLeaseLost) {
		return min(w.cfg.LeaseTTL<<min(n, 6), 10*time.Minute)
	}
	return w.cfg.RetryDelay(n)
}

// isFailure tells asynq whether a handler's error is the attempt's
// failure, which uses up one of the task's retries. A job whose end is
// written but not yet confirmed on enough replicas (jobsdb.ErrUnconfirmed,
// see confirmEnded) did not fail: its task is kept and tried again as
// often as it takes, at the first retry's delay, without using up retries
// (except on its last attempt, which asynq archives whatever the error).
func isFailure(err error) bool { return err != nil && !errors.Is(err, jobsdb.ErrUnconfirmed) }

// slot serialises jobs per store.
func (w *Worker) slot(name string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.slots[name]
	if !ok {
		s = make(chan struct{}, 1)
		w.slots[name] = s
	}
	return s
}

// permanent errors are not retried: retrying cannot change them.
func permanent(err error) bool {
	for _, target := range []error{asynq.SkipRetry, store.ErrUnknownStore, store.ErrInvalidName, store.ErrNoBackup,
		store.ErrUnknownBackup, store.ErrBadBackup, store.ErrNoBackupDir, jobs.ErrBadPayload, store.ErrCorrupt, offsite.ErrIdentity,
		store.ErrStoreExists, jobs.ErrStoreHeld, errUnknownTarget, errNothingToReencrypt, store.ErrNotShipping, ship.ErrNoPoint} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
