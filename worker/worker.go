package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
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
	cfg   Config
	rdb   redis.UniversalClient
	log   *slog.Logger
	lease jobs.Lease
	srv   *asynq.Server

	handlers  map[jobs.Kind]handlerFunc
	jobs      *jobs.Client
	sched     *scheduler
	incidents incidents
	counters  *counters
	node      jobs.NodeInfo
	unlisten  func() // removes the corruption listener

	mu         sync.Mutex
	slots      map[string]chan struct{}           // one job per store at a time
	running    map[string]context.CancelCauseFunc // job id -> its handler's cancel
	canceledAt map[string]time.Time               // job id -> when a cancel arrived
	jobsWG     sync.WaitGroup                     // running handlers

	shuttingDown atomic.Bool

	// attemptDone, when set (benchmarks), is called as each attempt's
	// handling ends, after its records are written.
	attemptDone func(jobs.Payload)

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
		rdb:        cfg.Redis,
		log:        cfg.Logger.With("component", "worker", "node", cfg.Node),
		lease:      jobs.Lease{Node: cfg.Node, Host: hostname(), Instance: newInstance()},
		slots:      map[string]chan struct{}{},
		running:    map[string]context.CancelCauseFunc{},
		canceledAt: map[string]time.Time{},
		jobs:       jobs.NewClient(cfg.Redis, cfg.Jobs),
		incidents:  incidents{pending: map[string]error{}, wake: make(chan struct{}, 1)},
	}
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
		jobs.KindBackup:  backupJob,
		jobs.KindVerify:  verifyJob,
		jobs.KindRestore: restoreJob,
	}
	return w, nil
}

// Start claims the stores (failing if another live node holds one),
// announces the node (node.up), starts the heartbeat, the cancel listener,
// the scheduler, the corruption handler and the notification dispatcher,
// and starts consuming jobs.
func (w *Worker) Start(ctx context.Context) error {
	if err := w.claim(ctx); err != nil {
		return err
	}
	now := time.Now().UTC()
	w.node = jobs.NodeInfo{Node: w.cfg.Node, Host: w.lease.Host, Instance: w.lease.Instance, Stores: w.cfg.Registry.Names(), StartedAt: now, At: now}
	if err := jobs.NodeUp(ctx, w.rdb, w.node, w.cfg.LeaseTTL, w.cfg.Jobs.EventsMaxLen); err != nil {
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
	sub := w.rdb.Subscribe(bgCtx, jobs.CancelChannel)
	if _, err := sub.Receive(ctx); err != nil { // subscribed before any job runs
		stop()
		return fmt.Errorf("worker: subscribe to cancels: %w", err)
	}
	// Corruption found from now on arrives through the listener; what was
	// found before (an open that failed) is in the stores' state.
	w.unlisten = w.cfg.Registry.OnCorrupt(w.incidents.add)
	for _, name := range w.cfg.Registry.Names() {
		if s, err := w.cfg.Registry.Store(name); err == nil {
			if st, cause := s.State(); st == store.StateCorrupt {
				w.incidents.add(name, cause)
			}
		}
	}
	w.bg.Add(6)
	go func() { defer w.bg.Done(); w.heartbeat(bgCtx) }()
	go func() { defer w.bg.Done(); w.reconcileLoop(bgCtx, 15*time.Second) }()
	go func() { defer w.bg.Done(); defer sub.Close(); w.listenCancels(bgCtx, sub) }()
	go func() { defer w.bg.Done(); w.incidentLoop(bgCtx) }()
	go func() { defer w.bg.Done(); w.dispatchLoop(bgCtx) }()
	go func() { defer w.bg.Done(); w.sched.run(bgCtx) }()

	w.srv = asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   map[string]int{jobs.NodeQueue(w.cfg.Node): 10, jobs.NotifyQueue: 1},
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		RetryDelayFunc:           func(n int, _ error, _ *asynq.Task) time.Duration { return w.cfg.RetryDelay(n) },
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		Logger:                   asynqLogger{w.log},
		LogLevel:                 asynq.WarnLevel,
	})
	if err := w.srv.Start(asynq.HandlerFunc(w.process)); err != nil {
		stop()
		w.bg.Wait()
		return fmt.Errorf("worker: start asynq server: %w", err)
	}
	w.log.Info("worker started", "stores", w.cfg.Registry.Names(), "queue", jobs.NodeQueue(w.cfg.Node))
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

// Shutdown stops in DESIGN.md's order: asynq's Shutdown first (it waits
// ShutdownTimeout, then requeues what is unfinished without counting a
// failure), then the handlers still running are cancelled and waited for;
// their records read retry, reason interrupted. The caller closes the
// stores afterwards.
func (w *Worker) Shutdown() {
	w.shuttingDown.Store(true)
	if w.srv != nil {
		w.srv.Shutdown()
	}
	w.mu.Lock()
	for _, cancel := range w.running {
		cancel(errInterrupted)
	}
	w.mu.Unlock()
	w.jobsWG.Wait()
	if w.unlisten != nil {
		w.unlisten()
	}
	if w.stop != nil {
		w.stop()
	}
	w.bg.Wait()
	w.log.Info("worker stopped")
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
			cancel := w.running[m.Payload]
			if cancel != nil {
				w.canceledAt[m.Payload] = time.Now()
			}
			w.mu.Unlock()
			if cancel != nil {
				w.log.Info("canceling running job", "job", m.Payload)
				cancel(errCanceled)
			}
		}
	}
}

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
		store.ErrUnknownBackup, store.ErrBadBackup, store.ErrNoBackupDir, jobs.ErrBadPayload, store.ErrCorrupt} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
