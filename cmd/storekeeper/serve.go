package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"storekeeper/api"
	"storekeeper/internal/config"
	"storekeeper/internal/demo"
	"storekeeper/internal/memredis"
	"storekeeper/jobmetrics"
	"storekeeper/jobsdb"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
	"storekeeper/worker"
)

// runServe runs serve (API, worker and schedules in one process), api or
// worker. Bad configuration is one line naming the flag, and exit 2.
func runServe(ctx context.Context, mode string, args []string, stdout, stderr io.Writer) int {
	c, err := config.Parse(mode, args, os.LookupEnv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, config.ErrUsage): // the flag set said why
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "storekeeper:", err)
		return 2
	}
	log, err := c.Logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "storekeeper:", err)
		return 2
	}
	if err := serve(ctx, c, log, stdout); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "storekeeper:", err)
			return 2
		}
		log.Error("storekeeper stopped", "err", err)
		return 1
	}
	return 0
}

// proc is this process: what every mode shares, its configuration, listener,
// Redis and the metrics registry.
type proc struct {
	c       *config.Config
	set     config.Setup
	log     *slog.Logger
	stdout  io.Writer
	ln      net.Listener
	rdb     redis.UniversalClient
	metrics *prometheus.Registry
}

// serve checks the configuration, wires what every mode shares and runs
// c's mode until ctx ends.
func serve(ctx context.Context, c *config.Config, log *slog.Logger, stdout io.Writer) error {
	set, err := c.Setup(log)
	if err != nil {
		return err
	}
	// Bind before touching Redis or the stores: a port already taken must
	// not leave stores claimed and a node announced (node.up, then
	// node.down when its heartbeat expires) by a process that then exits.
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return &config.Error{Flag: "listen", Err: err}
	}
	defer ln.Close()
	rdb, closeRedis, err := connectRedis(set.Redis, log)
	if err != nil {
		return err
	}
	defer closeRedis()
	p := &proc{c: c, set: set, log: log, stdout: stdout, ln: ln, rdb: rdb, metrics: prometheus.NewRegistry()}
	p.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	switch c.Mode {
	case "api":
		return p.serveAPI(ctx)
	case "worker":
		return p.serveWorker(ctx)
	}
	return p.serveAll(ctx)
}

// serveAll is serve: the API over this process's worker.
func (p *proc) serveAll(ctx context.Context) error {
	w, stopWorker, err := p.startWorker(ctx)
	if err != nil {
		return err
	}
	defer stopWorker()
	// All in one: a lost store is shown, not a reason to stop serving
	// the other stores.
	status := func() map[string]any {
		if lost := w.Lost(); len(lost) > 0 {
			return map[string]any{"lost_stores": lost}
		}
		return nil
	}
	srv, err := p.startAPI(ctx, w.Healthy, status)
	if err != nil {
		return err
	}
	defer srv.Close()
	return p.run(ctx, srv.Handler(), srv.Close, stopWorker)
}

// serveAPI is api: the API alone; workers elsewhere serve the stores.
func (p *proc) serveAPI(ctx context.Context) error {
	srv, err := p.startAPI(ctx, nil, nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	return p.run(ctx, srv.Handler(), srv.Close)
}

// serveWorker is worker: the worker and schedules, with /metrics, /healthz
// and /readyz.
func (p *proc) serveWorker(ctx context.Context) error {
	w, stopWorker, err := p.startWorker(ctx)
	if err != nil {
		return err
	}
	defer stopWorker()
	// The API's collector reports the whole cluster, this node included:
	// only a worker-only process registers its own node's.
	nodeMetrics, err := jobmetrics.New(jobmetrics.Config{Redis: p.rdb, Node: p.c.Node, StoreSeries: p.set.API.MetricsStoreSeries})
	if err != nil {
		return config.FlagError(err)
	}
	if err := p.metrics.Register(nodeMetrics); err != nil {
		return err
	}
	metricsHandler, err := api.MetricsHandler(p.metrics, p.c.MetricsToken)
	if err != nil {
		return config.FlagError(err)
	}
	return p.run(ctx, workerHandler(metricsHandler, w.Readiness), stopWorker)
}

// startAPI builds the API server and starts its event tailer.
func (p *proc) startAPI(ctx context.Context, ready func() error, status func() map[string]any) (*api.Server, error) {
	cfg := p.set.API
	cfg.Redis, cfg.Metrics, cfg.Listen, cfg.Ready, cfg.Status = p.rdb, p.metrics, p.ln.Addr().String(), ready, status
	srv, err := api.New(cfg)
	if err != nil {
		return nil, config.FlagError(err)
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return nil, err
	}
	return srv, nil
}

// startWorker opens the stores and starts the worker (and the demo
// writer with --demo). stop stops the worker within --shutdown-timeout,
// then the demo, then closes the stores; it may be called twice.
func (p *proc) startWorker(ctx context.Context) (*worker.Worker, func(), error) {
	reg, err := store.Open(p.set.Store)
	if err != nil {
		return nil, nil, err
	}
	// Stores whose jobs the worker abandoned at shutdown are left open
	// (closing one under a running job would crash); Pebble's synced WAL
	// makes that a clean enough stop.
	closeStores := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := reg.CloseContext(ctx); err != nil {
			p.log.Error("stores not closed cleanly", "err", err)
		}
	}
	cfg := p.set.Worker
	cfg.Redis, cfg.Registry, cfg.Metrics = p.rdb, reg, p.metrics
	targets, err := p.openTargets(ctx)
	if err != nil {
		closeStores()
		return nil, nil, err
	}
	closeTargets := func() {
		for _, t := range targets {
			_ = t.Close()
		}
	}
	cfg.Targets = targets
	if p.set.Store.Ship {
		sc := p.set.Ship
		sc.Targets, sc.Logger = targets, p.log
		if cfg.Shipper, err = ship.New(sc, reg); err != nil {
			closeTargets()
			closeStores()
			return nil, nil, err
		}
	}
	w, err := worker.New(cfg)
	if err != nil {
		closeTargets()
		closeStores()
		return nil, nil, config.FlagError(err)
	}
	stopDemo, stopped := func() {}, false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), p.c.ShutdownTimeout)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			p.log.Error("worker did not stop within --shutdown-timeout", "err", err)
		}
		stopDemo()
		closeTargets()
		closeStores()
	}
	if err := w.Start(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	if p.c.Demo {
		stopDemo = demo.Start(ctx, reg, jobsdb.NewClient(p.rdb, p.set.Jobs), p.log)
	}
	return w, stop, nil
}

// openTargets opens every --backup-target and probes it: one that cannot
// be reached stops the start (a typo in a URL should not wait for the
// first backup to show); one that ignores create-only writes is used,
// with a warning, since each store's owner writes its index alone.
func (p *proc) openTargets(ctx context.Context) ([]*offsite.Target, error) {
	var out []*offsite.Target
	var limit offsite.Limiter // one for every target: the flag bounds all uploads together
	if n := p.set.UploadLimit; n > 0 {
		limit = rate.NewLimiter(rate.Limit(n), int(min(n, 256<<10)))
	}
	fail := func(err error) ([]*offsite.Target, error) {
		for _, t := range out {
			_ = t.Close()
		}
		return nil, &config.Error{Flag: "backup-target", Err: err}
	}
	for _, spec := range p.set.Targets {
		t, err := offsite.Open(ctx, spec.Name, spec.URL, p.set.Encryption)
		if err != nil {
			return fail(err)
		}
		t.Limit = limit
		out = append(out, t)
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		pre, err := t.Probe(pctx, p.c.Node)
		cancel()
		if err != nil {
			return fail(err)
		}
		if !pre {
			p.log.Warn("backup target ignores create-only writes (If-None-Match); using it, since each store's owner writes its index alone",
				"target", t.Name, "url", t.Redacted())
		}
		p.log.Info("backup target ready", "target", t.Name, "url", t.Redacted())
	}
	return out, nil
}

// run serves handler on the listener until ctx ends, then shuts HTTP down
// and calls stops in order.
func (p *proc) run(ctx context.Context, handler http.Handler, stops ...func()) error {
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn)}
	tls := p.c.TLSCert != ""
	base := "http://" + p.ln.Addr().String()
	if tls {
		base = "https://" + p.ln.Addr().String()
	}
	p.log.Info("storekeeper listening", "mode", p.c.Mode, "url", base, "node", p.c.Node)
	if t := p.set.GeneratedToken; t != "" {
		fmt.Fprintf(p.stdout, "\nNo --tokens: generated an operator token for this run (it is not stored anywhere):\n\n  %s\n\n"+
			"Dashboard: %s/#token=%s\nAPI:       curl -H 'Authorization: Bearer %s' %s/api/stores\nQueues:    %s/monitoring/ (any user name, the token as password)\n\n",
			t, base, t, t, base, base)
	}
	errc := make(chan error, 1)
	go func() {
		if tls {
			errc <- hs.ServeTLS(p.ln, p.c.TLSCert, p.c.TLSKey)
		} else {
			errc <- hs.Serve(p.ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// A second signal exits at once.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	defer func() { signal.Stop(again); close(done) }()
	go func() {
		select {
		case <-again:
			p.log.Warn("second signal: exiting now")
			os.Exit(1)
		case <-done:
		}
	}()
	p.log.Info("shutting down: HTTP, then watchers, then the worker (running jobs are finished or requeued), then the stores")
	began := time.Now()
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(shut)
	for _, stop := range stops {
		stop()
	}
	// The last line: what came before it (a store not closed cleanly, jobs
	// abandoned) is the whole story of the shutdown.
	p.log.Info("storekeeper stopped", "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// connectRedis connects to --redis, or starts the in-process Redis.
func connectRedis(r config.Redis, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if r.InProcess() {
		mr, err := memredis.Start()
		if err != nil {
			return nil, nil, err
		}
		log.Warn("no --redis: using an in-process Redis; queues, job records, events and history live in memory only and are lost when the process exits")
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		return rdb, func() { rdb.Close(); mr.Close() }, nil
	}
	rdb := r.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis %s: %w", r.Redacted(), err)
	}
	// A cluster node answers PING, then refuses the first script that
	// touches keys in two hash slots (every enqueue): say so now.
	if info, err := rdb.Info(ctx, "cluster").Result(); err == nil && strings.Contains(info, "cluster_enabled:1") {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis %s is a Redis Cluster node, which storekeeper does not support (asynq's scripts and its own touch keys in several hash slots): use one Redis, with Sentinel for failover", r.Redacted())
	}
	warnEviction(ctx, rdb, log)
	return rdb, func() { rdb.Close() }, nil
}

// warnEviction warns when Redis may evict keys once it is full: a job's
// record, its locks, a queued task or the history could then vanish
// without a trace, and asynq and storekeeper both need noeviction (a full
// Redis then refuses writes, which callers see as 503 redis_unavailable).
// A Redis that does not answer CONFIG GET (a managed service) is not
// checked.
func warnEviction(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	v, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		log.Debug("Redis's maxmemory-policy not read; make sure it is noeviction", "err", err)
		return
	}
	if p := v["maxmemory-policy"]; p != "" && p != "noeviction" {
		log.Warn("Redis evicts keys when it is full: job records, locks, queued tasks and history can vanish; set maxmemory-policy noeviction",
			"maxmemory_policy", p)
	}
}

// workerHandler serves /metrics (Go, process and this node's job and
// store metrics, as registered in reg), /healthz and /readyz for a
// worker-only process (worker.Worker.Readiness).
func workerHandler(metrics http.Handler, ready func(context.Context) (bool, map[string]any)) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, body := ready(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}
