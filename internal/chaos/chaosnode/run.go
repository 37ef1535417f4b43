package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/config"
	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
	"storekeeper/worker"
)

// runConfig is what `chaosnode run` was told.
type runConfig struct {
	redisURL      string
	node          string
	data, backups string
	stores        []string
	ledger        string
	writeInterval time.Duration
	seed          int64
	minReplicas   int
	listen        string
	webhooks      []worker.Webhook
	targets       []string // NAME=URL
	shipInterval  time.Duration
	fast          bool
	logLevel      slog.Level
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// webhookFlag is a repeatable url#secret flag.
type webhookFlag []worker.Webhook

func (w *webhookFlag) String() string { return fmt.Sprint(len(*w), " webhooks") }
func (w *webhookFlag) Set(s string) error {
	u, secret, ok := strings.Cut(s, "#")
	if !ok {
		return fmt.Errorf("%q: want url#secret", s)
	}
	*w = append(*w, worker.Webhook{URL: u, Secret: secret})
	return nil
}

func parseRun(args []string, stderr io.Writer) (runConfig, error) {
	var c runConfig
	var stores listFlag
	var webhooks webhookFlag
	var targets listFlag
	level := "info"
	fs := flag.NewFlagSet("chaosnode run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.redisURL, "redis", "", "redis://host:port/db, rediss://…, or redis+sentinel://[:password@]host:port[,host:port…]/master[/db] (required)")
	fs.StringVar(&c.node, "node", "", "node name (required)")
	fs.StringVar(&c.data, "data", "", "data directory: one Pebble store per subdirectory (required)")
	fs.StringVar(&c.backups, "backups", "", "backup directory (empty: backups and restores are refused)")
	fs.Var(&stores, "stores", "stores to open, created when missing: a,b,c (required)")
	fs.StringVar(&c.ledger, "ledger", "", "the node's ledger file, outside --data (required)")
	fs.DurationVar(&c.writeInterval, "write-interval", 25*time.Millisecond, "each store's writer commits one batch this often")
	fs.Int64Var(&c.seed, "seed", 1, "seed of the writers' choices (keys per batch, sync or not)")
	fs.IntVar(&c.minReplicas, "min-replicas", 0, "jobs.ClientConfig.MinReplicas: WAIT for this many replicas on accepting and settling writes")
	fs.StringVar(&c.listen, "listen", "", "HTTP address for /healthz and /stats (empty: none); its bound address is printed as \"listening <addr>\"")
	fs.Var(&webhooks, "webhook", "notification webhook url#secret, repeatable")
	fs.Var(&targets, "backup-target", "backup targets NAME=URL, comma-separated (see storekeeper's --backup-target)")
	fs.DurationVar(&c.shipInterval, "ship-interval", 250*time.Millisecond, "with --backup-target: ship every store's commit log this often (0: do not ship)")
	fs.BoolVar(&c.fast, "fast", false, "chaos tuning: short retry backoffs, lease TTL and shutdown timeout")
	fs.StringVar(&level, "log-level", level, "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.stores, c.webhooks, c.targets = stores, webhooks, targets
	for _, t := range c.targets {
		if _, _, err := offsite.ParseSpec(t); err != nil {
			return c, fmt.Errorf("--backup-target: %w", err)
		}
	}
	for name, v := range map[string]string{"redis": c.redisURL, "node": c.node, "data": c.data, "ledger": c.ledger} {
		if v == "" {
			return c, fmt.Errorf("--%s is required", name)
		}
	}
	if len(c.stores) == 0 {
		return c, errors.New("--stores is required")
	}
	for _, s := range c.stores {
		if err := store.ValidateName(s); err != nil {
			return c, fmt.Errorf("--stores: %w", err)
		}
	}
	if err := jobs.ValidateNodeName(c.node); err != nil {
		return c, fmt.Errorf("--node: %w", err)
	}
	if inside(c.ledger, c.data) {
		return c, errors.New("--ledger must be outside --data: a restore replaces what is inside")
	}
	if c.writeInterval <= 0 {
		return c, errors.New("--write-interval must be positive")
	}
	if c.shipInterval < 0 {
		return c, errors.New("--ship-interval must not be negative")
	}
	if c.minReplicas < 0 {
		return c, errors.New("--min-replicas must not be negative")
	}
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("--log-level: %w", err)
	}
	return c, nil
}

// inside reports whether path is dir or under it.
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// workerConfig is the worker's configuration; --fast shortens what a chaos
// run waits on.
func (c runConfig) workerConfig(rdb redis.UniversalClient, reg *store.Registry, log *slog.Logger, clock clockwork.Clock) worker.Config {
	wc := worker.Config{Redis: rdb, Registry: reg, Node: c.node, Logger: log, Webhooks: c.webhooks, Clock: clock}
	wc.Jobs.MinReplicas = c.minReplicas
	if c.fast {
		wc.RetryDelay = func(n int) time.Duration { return min(250*time.Millisecond<<min(n, 4), 2*time.Second) }
		wc.DelayedTaskCheckInterval = 200 * time.Millisecond
		wc.LeaseTTL = 3 * time.Second // the least Validate takes; renewed every second
		wc.ShutdownTimeout = 3 * time.Second
		wc.NotifyTimeout = 2 * time.Second
		wc.ReconcileInterval = 5 * time.Second
		// Slots every few seconds, so that a run fires many (and a node's
		// moved clock meets them).
		wc.Schedules = map[jobs.Kind]string{jobs.KindVerify: "@every 20s", jobs.KindBackup: "@every 30s", jobs.KindCompact: "@every 45s", jobs.KindDrill: "@every 40s"}
	}
	return wc
}

// storeStats counts one store's writes, for /stats.
type storeStats struct {
	next       atomic.Uint64 // the next seq
	acked      atomic.Uint64 // the highest seq this run committed
	intents    atomic.Int64
	acks       atomic.Int64
	acksSynced atomic.Int64
	errors     atomic.Int64
	skipped    atomic.Int64
}

// node is a running chaos node: the registry, the worker and the writers.
type node struct {
	cfg     runConfig
	log     *slog.Logger
	ledger  *ledger
	reg     *store.Registry
	rdb     redis.UniversalClient
	worker  atomic.Pointer[worker.Worker] // set once started
	stats   map[string]*storeStats
	writers sync.WaitGroup
	targets []*offsite.Target
	shipper *ship.Shipper // nil: not shipping
	net     *netFaults    // between the node and Redis
	clock   *shiftedClock // the worker's
}

// runMain is `chaosnode run`: it returns when ctx ends (SIGTERM, SIGINT),
// after a graceful stop. Exit codes: 0 stopped gracefully, 1 could not
// run, 2 usage.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseRun(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "chaosnode run:", err)
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel})).With("node", cfg.node)
	if err := runNode(ctx, cfg, log, stdout); err != nil {
		log.Error("chaosnode run", "err", err)
		return 1
	}
	return 0
}

func runNode(ctx context.Context, cfg runConfig, log *slog.Logger, stdout io.Writer) error {
	n := &node{cfg: cfg, log: log, stats: map[string]*storeStats{}, net: newNetFaults(), clock: newShiftedClock()}
	defer n.net.close()
	last, err := lastSeqs(cfg.ledger, cfg.node)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	for _, s := range cfg.stores {
		n.stats[s] = &storeStats{}
		n.stats[s].next.Store(last[s] + 1)
	}
	if n.ledger, err = openLedger(cfg.ledger); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer n.ledger.Close()
	if err := n.ledger.line(fmt.Sprintf("S %s %d %d\n", cfg.node, os.Getpid(), time.Now().UnixNano())); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}

	shipping := len(cfg.targets) > 0 && cfg.shipInterval > 0
	n.reg, err = store.Open(store.Config{DataDir: cfg.data, BackupDir: cfg.backups, Stores: cfg.stores, Logger: log, Ship: shipping,
		Retention: store.Retention{Window: ship.DefaultWindow}})
	if err != nil {
		return err
	}
	defer func() {
		if err := n.reg.Close(); err != nil {
			log.Error("closing stores", "err", err)
		}
	}()

	if cfg.listen != "" {
		stopHTTP, err := n.serveHTTP(stdout)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}

	r, err := config.ParseRedis(cfg.redisURL) // storekeeper's own --redis forms
	if err != nil {
		return err
	}
	// Every connection to Redis goes through the node's fault proxies.
	if r.Failover != nil {
		r.Failover.Dialer = n.net.dial
	} else {
		r.Options.Dialer = n.net.dial
	}
	n.rdb = r.Client()
	defer n.rdb.Close()
	for _, spec := range cfg.targets {
		name, u, _ := offsite.ParseSpec(spec)
		t, err := offsite.Open(ctx, name, u, nil)
		if err != nil {
			return err
		}
		defer t.Close()
		n.targets = append(n.targets, t)
	}
	if shipping {
		// The data directory is a small tmpfs in a chaos run: the segments
		// (and archived WALs) a store may keep while the target is down are
		// bounded well inside it.
		n.shipper, err = ship.New(ship.Config{Dir: filepath.Join(cfg.data, store.MetaDir, "ship"), Targets: n.targets,
			Interval: cfg.shipInterval, Buffer: 16 << 20, Logger: log}, n.reg)
		if err != nil {
			return err
		}
	}
	w, err := n.startWorker(ctx)
	if err != nil || w == nil {
		return err // nil: stopped before the worker started
	}
	// Deferred calls run last first: the writers stop, then the worker,
	// then (above) HTTP, the stores, the ledger.
	defer w.Shutdown()
	n.startWriters(ctx)
	<-ctx.Done()
	log.Info("stopping: writers, worker, stores")
	n.writers.Wait()
	return nil
}

// startWorker starts the worker, again every second while Start fails
// (Redis unreachable during a failover): the harness restarts a node at
// any moment. It returns nil, nil when ctx ends first; an invalid
// configuration is an error at once.
func (n *node) startWorker(ctx context.Context) (*worker.Worker, error) {
	for {
		wc := n.cfg.workerConfig(n.rdb, n.reg, n.log, n.clock)
		wc.Targets, wc.Shipper = n.targets, n.shipper
		w, err := worker.New(wc)
		if err != nil {
			return nil, err
		}
		if err = w.Start(ctx); err == nil {
			n.worker.Store(w)
			return w, nil
		}
		n.log.Warn("worker did not start; trying again", "err", err)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}

// startWriters starts one writer per store; they stop when ctx ends.
func (n *node) startWriters(ctx context.Context) {
	for _, name := range n.cfg.stores {
		s, err := n.reg.Store(name)
		if err != nil {
			n.log.Error("no handle; not writing", "store", name, "err", err)
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(name))
		st := n.stats[name]
		// Seeded by --seed, the store and where this run starts, so a
		// restarted node does not replay its choices.
		rng := rand.New(rand.NewPCG(uint64(n.cfg.seed), h.Sum64()^st.next.Load()))
		n.writers.Add(1)
		go func() {
			defer n.writers.Done()
			n.write(ctx, s, st, rng)
		}()
		if n.shipper != nil {
			n.writers.Add(1)
			go func() {
				defer n.writers.Done()
				n.markShipped(ctx, s, st)
			}()
		}
	}
}

// markShipped records in the ledger, as W lines, how far this run's
// writes to s are known to be on every target: it notes the highest seq
// committed, waits for Store.WaitShipped (every write committed before the
// call is shipped) and writes "W <store> <key> <time>". The checker takes
// every key of the run up to that seq as shipped by that time.
func (n *node) markShipped(ctx context.Context, s *store.Store, st *storeStats) {
	t := time.NewTicker(4 * n.cfg.shipInterval)
	defer t.Stop()
	var marked uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq := st.acked.Load()
		if seq == 0 || seq == marked {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.WaitShipped(wctx)
		cancel()
		if err != nil {
			n.log.Debug("writes not known shipped", "store", s.Name(), "err", err)
			continue
		}
		marked = seq
		if err := n.ledger.line(fmt.Sprintf("W %s %s %d\n", s.Name(), writeKey(n.cfg.node, s.Name(), seq), time.Now().UnixNano())); err != nil {
			n.log.Error("ledger: shipped mark not recorded", "store", s.Name(), "err", err)
		}
	}
}

func (n *node) write(ctx context.Context, s *store.Store, st *storeStats, rng *rand.Rand) {
	t := time.NewTicker(n.cfg.writeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.writeBatch(s, st, rng)
	}
}

// writeBatch commits one batch of 1–3 keys, half of the batches synced,
// recorded in the ledger: I lines before the commit, then A lines or E
// lines. A store that is not open and owned is skipped this tick.
func (n *node) writeBatch(s *store.Store, st *storeStats, rng *rand.Rand) {
	if state, cause := s.State(); state != store.StateOpen || !s.Owned() {
		st.skipped.Add(1)
		n.log.Debug("store not writable; skipping a tick", "store", s.Name(), "state", state, "cause", cause, "owned", s.Owned())
		return
	}
	count := 1 + rng.IntN(3)
	synced := rng.IntN(2) == 0
	flag := 0
	if synced {
		flag = 1
	}
	keys := make([]string, count)
	values := make([]string, count)
	for i := range keys {
		seq := st.next.Add(1) - 1
		keys[i] = writeKey(n.cfg.node, s.Name(), seq)
		at := time.Now().UnixNano()
		values[i] = writeValue(seq, at)
		// No intent on record, no commit: a key present in the store must
		// have been attempted.
		if err := n.ledger.line(fmt.Sprintf("I %s %s %d %d\n", s.Name(), keys[i], flag, at)); err != nil {
			n.log.Error("ledger: intent not recorded; not committing", "store", s.Name(), "err", err)
			return
		}
		st.intents.Add(1)
	}
	err := s.Update(func(b *store.Batch) error {
		b.Sync(synced)
		for i := range keys {
			if err := b.Set([]byte(keys[i]), []byte(values[i])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		code := errorCode(err)
		st.errors.Add(int64(count))
		lvl := slog.LevelWarn
		if code != "error" {
			lvl = slog.LevelDebug
		}
		n.log.Log(context.Background(), lvl, "commit failed", "store", s.Name(), "err", err)
		for _, k := range keys {
			_ = n.ledger.line(fmt.Sprintf("E %s %s %s\n", s.Name(), k, code))
		}
		return
	}
	at := time.Now().UnixNano()
	for _, k := range keys {
		if err := n.ledger.line(fmt.Sprintf("A %s %s %d %d\n", s.Name(), k, flag, at)); err != nil {
			n.log.Error("ledger: acknowledgement not recorded", "store", s.Name(), "key", k, "err", err)
		}
	}
	st.acks.Add(int64(count))
	if _, _, seq, ok := parseKey(keys[count-1]); ok {
		st.acked.Store(seq)
	}
	if synced {
		st.acksSynced.Add(int64(count))
	}
}

// errorCode is the one-word form of a commit error in E lines.
func errorCode(err error) string {
	switch {
	case errors.Is(err, store.ErrNotOwner):
		return "not_owner"
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, store.ErrClosed):
		return "closed"
	}
	return "error"
}

// serveHTTP serves /healthz, /readyz and /stats on --listen and prints the bound
// address on stdout; the returned function stops the server.
func (n *node) serveHTTP(stdout io.Writer) (func(), error) {
	ln, err := net.Listen("tcp", n.cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("GET /readyz", n.readyz)
	mux.HandleFunc("GET /stats", n.statsHandler)
	n.faultHandlers(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http", "err", err)
		}
	}()
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// healthz answers 200 once the worker started, until it stops; 503
// otherwise.
func (n *node) healthz(w http.ResponseWriter, _ *http.Request) {
	wk := n.worker.Load()
	if wk == nil {
		http.Error(w, "worker not started", http.StatusServiceUnavailable)
		return
	}
	if err := wk.Healthy(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// readyz is `storekeeper worker`'s /readyz (worker.Worker.Readiness):
// Redis reachable, the worker running, none of its stores lost to
// another node; 503 before the worker started.
func (n *node) readyz(w http.ResponseWriter, r *http.Request) {
	wk := n.worker.Load()
	if wk == nil {
		http.Error(w, "worker not started", http.StatusServiceUnavailable)
		return
	}
	ok, body := wk.Readiness(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

// storeStatsJSON is one store in /stats.
type storeStatsJSON struct {
	State      string `json:"state"`
	Owned      bool   `json:"owned"`
	Intents    int64  `json:"intents"`
	Acks       int64  `json:"acks"`
	AcksSynced int64  `json:"acks_synced"`
	Errors     int64  `json:"errors"`
	Skipped    int64  `json:"skipped"`
	NextSeq    uint64 `json:"next_seq"`
}

// statsJSON is /stats: this process's writes, per store.
type statsJSON struct {
	Node    string                    `json:"node"`
	Started bool                      `json:"started"`
	Stores  map[string]storeStatsJSON `json:"stores"`
}

func (n *node) statsHandler(w http.ResponseWriter, _ *http.Request) {
	out := statsJSON{Node: n.cfg.node, Started: n.worker.Load() != nil, Stores: map[string]storeStatsJSON{}}
	for name, st := range n.stats {
		j := storeStatsJSON{Intents: st.intents.Load(), Acks: st.acks.Load(), AcksSynced: st.acksSynced.Load(),
			Errors: st.errors.Load(), Skipped: st.skipped.Load(), NextSeq: st.next.Load()}
		if s, err := n.reg.Store(name); err == nil {
			state, _ := s.State()
			j.State, j.Owned = state.String(), s.Owned()
		}
		out.Stores[name] = j
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
