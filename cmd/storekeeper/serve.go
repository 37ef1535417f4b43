package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"storekeeper/api"
	"storekeeper/internal/memredis"
	"storekeeper/jobmetrics"
	"storekeeper/jobs"
	"storekeeper/store"
	"storekeeper/worker"
)

// serveConfig is what the flags (or STOREKEEPER_* variables) say.
type serveConfig struct {
	listen, redisURL, dataDir, backupDir, node, stores, tokens string
	schedCompact, schedBackup, schedVerify                     string
	autoRestore, backupRetention, origins, tlsCert, tlsKey     string
	publicURL, trustedProxies, metricsToken                    string
	wsMaxWatchers, wsMaxFilters                                int
	logFormat                                                  string
	demo, pushAllowPrivate                                     bool
	pushPerToken                                               int
	pushSubscriber                                             string
	autoRestoreLimit, concurrency                              int
	jobRetention, leaseTTL, shutdownTimeout                    time.Duration
	webhooks                                                   multiFlag
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// envName is the variable that sets a flag: --backup-dir is
// STOREKEEPER_BACKUP_DIR.
func envName(flagName string) string {
	return "STOREKEEPER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// serveFlags defines the flags of mode (serve, api or worker).
func serveFlags(mode string, stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	str := func(p *string, name, def, help string) { fs.StringVar(p, name, def, help+" (env "+envName(name)+")") }
	str(&c.listen, "listen", "127.0.0.1:8080", "HTTP address")
	str(&c.redisURL, "redis", "", "redis:// or rediss:// URL, or redis+sentinel://[:password@]host:port[,host:port…]/master[/db]; empty: an in-process Redis, in memory only")
	str(&c.logFormat, "log-format", "text", "log format: text or json")
	if mode != "worker" {
		str(&c.tokens, "tokens", "", "API tokens name:role:token,… (role viewer or operator) or @file; empty: one operator token is generated and printed, and only loopback is served")
		str(&c.origins, "allowed-origins", "", "comma-separated origins (https://host:port) allowed to open WebSockets and send requests that change something, besides the server's own")
		str(&c.publicURL, "public-url", "", "the URL users reach the server at (scheme://host[:port], e.g. behind a proxy): browsers on its origin may act; empty: the scheme and address of --listen")
		str(&c.trustedProxies, "trusted-proxies", "", "comma-separated IP addresses or CIDRs of reverse proxies whose X-Forwarded-For / X-Real-IP name the client in the access log; empty: none, the peer address is logged")
		str(&c.tlsCert, "tls-cert", "", "TLS certificate file (with --tls-key)")
		str(&c.tlsKey, "tls-key", "", "TLS key file")
		fs.IntVar(&c.pushPerToken, "push-subscriptions-per-token", 8, "Web Push subscriptions one token may keep (env "+envName("push-subscriptions-per-token")+")")
		fs.IntVar(&c.wsMaxWatchers, "ws-max-watchers-per-token", 64, "WebSocket watchers one token may have open at once on this API process (each API process counts its own); one more is refused with 429 too_many_watchers; negative: no limit (env "+envName("ws-max-watchers-per-token")+")")
		fs.IntVar(&c.wsMaxFilters, "ws-max-filters", 100, "filter values (store, job and kind together) one WebSocket watcher may give; more is refused with 400 too_many_filters; negative: no limit (env "+envName("ws-max-filters")+")")
	}
	str(&c.metricsToken, "metrics-token", "", "bearer token /metrics requires (at least 16 characters; Prometheus authorization credentials or basic_auth password); empty: /metrics is open")
	fs.BoolVar(&c.pushAllowPrivate, "push-allow-private", false, "let Web Push endpoints be http or resolve to loopback, private or link-local addresses (tests, a push service inside the network); off: https to public addresses only, checked at subscribe time and at every connection (env "+envName("push-allow-private")+")")
	if mode != "api" {
		str(&c.dataDir, "data-dir", "./data", "directory of the stores")
		str(&c.backupDir, "backup-dir", "./backups", "directory of the backups (not inside --data-dir)")
		str(&c.node, "node", host, "this node's name; it owns the stores in --data-dir")
		str(&c.stores, "stores", "", "comma-separated store names to create if missing")
		str(&c.pushSubscriber, "push-subscriber", "mailto:storekeeper@localhost", "the Web Push contact push services may use about this sender: mailto:address or an https URL")
		fs.Var(&c.webhooks, "webhook", "notification webhook url#secret, repeatable (env "+envName("webhook")+", space-separated)")
		str(&c.schedCompact, "schedule-compact", worker.DefaultSchedules[jobs.KindCompact], "cron spec for compaction, or off")
		str(&c.schedBackup, "schedule-backup", worker.DefaultSchedules[jobs.KindBackup], "cron spec for backups, or off")
		str(&c.schedVerify, "schedule-verify", worker.DefaultSchedules[jobs.KindVerify], "cron spec for verification, or off")
		str(&c.autoRestore, "auto-restore", "on", "restore a corrupt store from its newest verified backup: on or off")
		fs.IntVar(&c.autoRestoreLimit, "auto-restore-limit", 3, "automatic restores per store in any 24 h (env "+envName("auto-restore-limit")+")")
		str(&c.backupRetention, "backup-retention", "last=7,daily=7", "backups kept: the newest N, and the newest of each day for D days")
		fs.DurationVar(&c.leaseTTL, "lease-ttl", 15*time.Second, "store ownership lease (env "+envName("lease-ttl")+")")
		fs.IntVar(&c.concurrency, "concurrency", 4, "jobs run at once on this node, one per store (env "+envName("concurrency")+")")
		fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long running jobs may take to finish or stop; after it they are left to asynq, which runs them again, and their stores are not closed cleanly (env "+envName("shutdown-timeout")+")")
		fs.BoolVar(&c.demo, "demo", false, "also create the demo stores ("+strings.Join(demoStoreNames(), ", ")+") with churn and a first backup, keep a light writer on them, and schedule jobs every few minutes (env "+envName("demo")+")")
	}
	fs.DurationVar(&c.jobRetention, "job-retention", jobs.DefaultRecordRetention, "how long finished job records are kept (env "+envName("job-retention")+")")
	return fs, c
}

// applyEnv sets the flags not given on the command line from STOREKEEPER_*.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || given[f.Name] || err != nil {
			return
		}
		vals := []string{v}
		if f.Name == "webhook" {
			vals = strings.Fields(v)
		}
		for _, v := range vals {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", envName(f.Name), e)
			}
		}
	})
	return err
}

// runServe runs serve (API, worker and schedules in one process), api or
// worker.
func runServe(ctx context.Context, mode string, args []string, stdout, stderr io.Writer) int {
	fs, c := serveFlags(mode, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintln(stderr, "storekeeper:", err)
		return 2
	}
	if c.demo {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for name, spec := range demoSchedules {
			if _, env := os.LookupEnv(envName(name)); !given[name] && !env {
				_ = fs.Set(name, spec)
			}
		}
	}
	log, err := newLogger(c.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "storekeeper: --log-format:", err)
		return 2
	}
	if err := serve(ctx, mode, c, log, stdout); err != nil {
		var ce configError
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "storekeeper:", err)
			return 2
		}
		log.Error("storekeeper stopped", "err", err)
		return 1
	}
	return 0
}

// configError is bad configuration: one line naming the flag, exit 2.
type configError struct{ error }

func flagErr(name string, err error) error { return configError{fmt.Errorf("--%s: %w", name, err)} }

func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("%q is not text or json", format)
}

func serve(ctx context.Context, mode string, c *serveConfig, log *slog.Logger, stdout io.Writer) error {
	// Validate everything before touching anything.
	if mode != "serve" && c.redisURL == "" {
		return flagErr("redis", fmt.Errorf("%s needs a shared Redis: the in-process one serves only a single storekeeper serve", mode))
	}
	var tokens []api.Token
	var generated string
	if mode != "worker" {
		var err error
		if tokens, err = api.ParseTokens(c.tokens); err != nil {
			return flagErr("tokens", err)
		}
		if len(tokens) == 0 {
			if !loopback(c.listen) {
				return flagErr("listen", fmt.Errorf("%s is not a loopback address: without --tokens, storekeeper serves loopback only", c.listen))
			}
			b := make([]byte, 24)
			_, _ = rand.Read(b)
			generated = base64.RawURLEncoding.EncodeToString(b)
			tokens = []api.Token{{Name: "admin", Role: api.RoleOperator, Secret: generated}}
		}
		if (c.tlsCert == "") != (c.tlsKey == "") {
			return flagErr("tls-cert", errors.New("--tls-cert and --tls-key go together"))
		}
	}
	var wcfg worker.Config
	var scfg store.Config
	if mode != "api" {
		var err error
		if scfg, err = storeConfig(c, log); err != nil {
			return err
		}
		if wcfg, err = workerConfig(c, log); err != nil {
			return err
		}
	}
	origins, proxies := splitList(c.origins), splitList(c.trustedProxies)
	if mode != "worker" && c.pushPerToken < 1 {
		return flagErr("push-subscriptions-per-token", errors.New("must be at least 1"))
	}
	if err := api.CheckConfig(api.Config{AllowedOrigins: origins, PublicURL: c.publicURL, TrustedProxies: proxies,
		MetricsToken: c.metricsToken}); err != nil {
		return apiConfigError(err)
	}

	// Bind before touching Redis or the stores: a port already taken must
	// not leave stores claimed and a node announced (node.up, then
	// node.down when its heartbeat expires) by a process that then exits.
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return flagErr("listen", err)
	}
	defer ln.Close()

	rdb, closeRedis, err := connectRedis(c.redisURL, log)
	if err != nil {
		return err
	}
	defer closeRedis()
	jcfg := jobs.ClientConfig{RecordRetention: c.jobRetention}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var reg *store.Registry
	var w *worker.Worker
	if mode != "api" {
		if reg, err = store.Open(scfg); err != nil {
			return err
		}
		defer func() {
			// Stores whose jobs the worker abandoned at shutdown are left
			// open (closing one under a running job would crash); Pebble's
			// synced WAL makes that a clean enough stop.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := reg.CloseContext(ctx); err != nil {
				log.Error("stores not closed cleanly", "err", err)
			}
		}()
		wcfg.Redis, wcfg.Registry, wcfg.Jobs, wcfg.Metrics = rdb, reg, jcfg, promReg
		if w, err = worker.New(wcfg); err != nil {
			return configError{err}
		}
		if err := w.Start(ctx); err != nil {
			return err
		}
		if c.demo {
			stopDemo := startDemo(ctx, reg, jobs.NewClient(rdb, jcfg), log)
			defer stopDemo()
		}
	}
	stopWorker := func() {
		if w != nil {
			ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
			defer cancel()
			if err := w.Stop(ctx); err != nil {
				log.Error("worker did not stop within --shutdown-timeout", "err", err)
			}
			w = nil
		}
	}
	defer stopWorker()

	var handler http.Handler
	var srv *api.Server
	if mode != "worker" {
		var ready func() error
		var status func() map[string]any
		if w != nil {
			ready = w.Healthy
			// All in one: a lost store is shown, not a reason to stop
			// serving the other stores.
			status = func() map[string]any {
				if lost := w.Lost(); len(lost) > 0 {
					return map[string]any{"lost_stores": lost}
				}
				return nil
			}
		}
		srv, err = api.New(api.Config{Redis: rdb, Tokens: tokens, AllowedOrigins: origins, Jobs: jcfg, Logger: log, Metrics: promReg, Ready: ready, Status: status,
			PushAllowPrivate: c.pushAllowPrivate, PushSubscriptionsPerToken: c.pushPerToken,
			PublicURL: c.publicURL, Listen: ln.Addr().String(), TLS: c.tlsCert != "", TrustedProxies: proxies,
			MaxWatchersPerToken: c.wsMaxWatchers, MaxWatchFilters: c.wsMaxFilters, MetricsToken: c.metricsToken})
		if err != nil {
			return apiConfigError(err)
		}
		srv.Start(ctx)
		defer srv.Close()
		handler = srv.Handler()
	} else {
		// The API's collector reports the whole cluster, this node
		// included: only a worker-only process registers its own node's.
		nodeMetrics, err := jobmetrics.New(jobmetrics.Config{Redis: rdb, Node: c.node})
		if err != nil {
			return configError{err}
		}
		if err := promReg.Register(nodeMetrics); err != nil {
			return err
		}
		metricsHandler, err := api.MetricsHandler(promReg, c.metricsToken)
		if err != nil {
			return apiConfigError(err)
		}
		handler = workerHandler(rdb, metricsHandler, w.Healthy, w.Lost)
	}
	hs := &http.Server{Addr: c.listen, Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	log.Info("storekeeper listening", "mode", mode, "url", scheme+"://"+ln.Addr().String(), "node", c.node)
	if generated != "" {
		base := scheme + "://" + ln.Addr().String()
		fmt.Fprintf(stdout, "\nNo --tokens: generated an operator token for this run (it is not stored anywhere):\n\n  %s\n\n"+
			"Dashboard: %s/#token=%s\nAPI:       curl -H 'Authorization: Bearer %s' %s/api/stores\nQueues:    %s/monitoring/ (any user name, the token as password)\n\n",
			generated, base, generated, generated, base, base)
	}
	errc := make(chan error, 1)
	go func() {
		if c.tlsCert != "" {
			errc <- hs.ServeTLS(ln, c.tlsCert, c.tlsKey)
		} else {
			errc <- hs.Serve(ln)
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
	go func() { <-again; log.Warn("second signal: exiting now"); os.Exit(1) }()
	log.Info("shutting down: HTTP, then watchers, then the worker (running jobs are finished or requeued), then the stores")
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(shut)
	if srv != nil {
		srv.Close()
	}
	stopWorker()
	return nil
}

// apiFlags names the flag that sets each api.Config field a flag sets.
var apiFlags = map[string]string{"PublicURL": "public-url", "AllowedOrigins": "allowed-origins",
	"TrustedProxies": "trusted-proxies", "MetricsToken": "metrics-token"}

// apiConfigError turns the api's refusal of a field into the error of the
// flag that set it.
func apiConfigError(err error) error {
	var ce *api.ConfigError
	if errors.As(err, &ce) {
		if name, ok := apiFlags[ce.Field]; ok {
			return flagErr(name, ce.Err)
		}
	}
	return configError{err}
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func storeConfig(c *serveConfig, log *slog.Logger) (store.Config, error) {
	cfg := store.Config{DataDir: c.dataDir, BackupDir: c.backupDir, Logger: log}
	if c.demo {
		cfg.Stores = demoStoreNames()
	}
	if c.stores != "" {
		for _, n := range strings.Split(c.stores, ",") {
			n = strings.TrimSpace(n)
			if err := jobs.ValidateStoreName(n); err != nil {
				return cfg, flagErr("stores", err)
			}
			cfg.Stores = append(cfg.Stores, n)
		}
	}
	for _, kv := range strings.Split(c.backupRetention, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 || (k != "last" && k != "daily") {
			return cfg, flagErr("backup-retention", fmt.Errorf("%q: want last=N,daily=D", c.backupRetention))
		}
		if k == "last" {
			cfg.Retention.Last = n
		} else {
			cfg.Retention.Daily = n
		}
	}
	return cfg, nil
}

func workerConfig(c *serveConfig, log *slog.Logger) (worker.Config, error) {
	cfg := worker.Config{Node: c.node, Logger: log, Concurrency: c.concurrency, LeaseTTL: c.leaseTTL,
		AutoRestore: c.autoRestore, AutoRestoreLimit: c.autoRestoreLimit,
		Schedules: map[jobs.Kind]string{jobs.KindCompact: c.schedCompact, jobs.KindBackup: c.schedBackup, jobs.KindVerify: c.schedVerify}}
	for _, h := range c.webhooks {
		u, secret, ok := strings.Cut(h, "#")
		if !ok {
			return cfg, flagErr("webhook", fmt.Errorf("%q: want url#secret", u))
		}
		cfg.Webhooks = append(cfg.Webhooks, worker.Webhook{URL: u, Secret: secret})
	}
	cfg.Push.Subscriber = c.pushSubscriber
	cfg.Push.AllowPrivate = c.pushAllowPrivate
	if err := cfg.Push.Validate(); err != nil {
		return cfg, flagErr("push-subscriber", err)
	}
	if err := jobs.ValidateNodeName(c.node); err != nil {
		return cfg, flagErr("node", err)
	}
	if c.autoRestore != "on" && c.autoRestore != "off" {
		return cfg, flagErr("auto-restore", fmt.Errorf("%q is not on or off", c.autoRestore))
	}
	if c.autoRestoreLimit < 1 {
		return cfg, flagErr("auto-restore-limit", errors.New("must be at least 1"))
	}
	if c.concurrency < 1 {
		return cfg, flagErr("concurrency", errors.New("must be at least 1"))
	}
	if c.shutdownTimeout < time.Second {
		return cfg, flagErr("shutdown-timeout", errors.New("must be at least 1s"))
	}
	// asynq gives running jobs half the budget (at most 10 s) to finish
	// before it requeues them; then they are cancelled and waited for.
	cfg.ShutdownTimeout = min(10*time.Second, c.shutdownTimeout/2)
	if c.leaseTTL < 3*time.Second {
		return cfg, flagErr("lease-ttl", errors.New("must be at least 3s"))
	}
	for name, spec := range map[string]string{"schedule-compact": c.schedCompact, "schedule-backup": c.schedBackup, "schedule-verify": c.schedVerify} {
		if err := worker.ValidateSchedule(spec); err != nil {
			return cfg, flagErr(name, err)
		}
	}
	return cfg, nil
}

// connectRedis connects to --redis, or starts the in-process one.
func connectRedis(raw string, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if raw == "" {
		mr, err := memredis.Start()
		if err != nil {
			return nil, nil, err
		}
		log.Warn("no --redis: using an in-process Redis; queues, job records, events and history live in memory only and are lost when the process exits")
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		return rdb, func() { rdb.Close(); mr.Close() }, nil
	}
	var rdb redis.UniversalClient
	// redis-sentinel:// is docs/design.md's spelling; redis+sentinel:// the one
	// other Redis clients use. Both are accepted.
	rest, ok := strings.CutPrefix(raw, "redis+sentinel://")
	if !ok {
		rest, ok = strings.CutPrefix(raw, "redis-sentinel://")
	}
	if ok {
		opt, err := parseSentinel(rest)
		if err != nil {
			return nil, nil, flagErr("redis", redactErr(err, raw))
		}
		rdb = redis.NewFailoverClient(opt)
	} else {
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, nil, flagErr("redis", redactErr(err, raw))
		}
		rdb = redis.NewClient(opt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("redis %s: %w", redactURL(raw), err)
	}
	return rdb, func() { rdb.Close() }, nil
}

// parseSentinel reads [:password@]host:port[,host:port…]/master[/db].
func parseSentinel(s string) (*redis.FailoverOptions, error) {
	opt := &redis.FailoverOptions{}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		cred := s[:at]
		s = s[at+1:]
		user, pass, ok := strings.Cut(cred, ":")
		if !ok {
			pass, user = user, ""
		}
		opt.Username, opt.Password = user, pass
	}
	hosts, path, ok := strings.Cut(s, "/")
	if !ok || hosts == "" {
		return nil, errors.New("sentinel form: redis+sentinel://[:password@]host:port[,host:port…]/master[/db]")
	}
	opt.SentinelAddrs = strings.Split(hosts, ",")
	master, db, _ := strings.Cut(path, "/")
	if master == "" {
		return nil, errors.New("sentinel form needs the master name")
	}
	opt.MasterName = master
	if db != "" {
		n, err := strconv.Atoi(db)
		if err != nil {
			return nil, fmt.Errorf("sentinel db %q is not a number", db)
		}
		opt.DB = n
	}
	return opt, nil
}

// redactURL hides the credentials of a Redis URL (the user information
// before the last @ of its authority), for logs and errors.
func redactURL(raw string) string {
	j := strings.Index(raw, "://")
	if j < 0 {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return "…@" + raw[i+1:]
		}
		return raw
	}
	rest := raw[j+3:]
	end := len(rest)
	if k := strings.IndexAny(rest, "/?#"); k >= 0 {
		end = k
	}
	if i := strings.LastIndex(rest[:end], "@"); i >= 0 {
		return raw[:j+3] + "…@" + rest[i+1:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 { // an @ in a malformed URL's path: hide all before it
		return raw[:j+3] + "…@" + rest[i+1:]
	}
	return raw
}

// redactErr is err with every copy of raw in its text replaced by the
// redacted URL: parse errors quote the URL they could not parse, password
// included.
func redactErr(err error, raw string) error {
	msg := err.Error()
	safe := redactURL(raw)
	if safe == raw {
		return err
	}
	msg = strings.ReplaceAll(msg, raw, safe)
	// A password can also appear alone (the user information split off).
	if user := credentials(raw); user != "" {
		msg = strings.ReplaceAll(msg, user, "…")
	}
	return errors.New(msg)
}

// credentials returns the user information of a URL-like string, "" when
// there is none.
func credentials(raw string) string {
	rest := raw
	if j := strings.Index(raw, "://"); j >= 0 {
		rest = raw[j+3:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return rest[:i]
	}
	return ""
}

// workerHandler serves /metrics (Go, process and this node's job and
// store metrics, as registered in reg), /healthz and /readyz for a
// worker-only process.
//
// A worker that lost a store to another node is not ready: it is there to
// serve its stores, and one of them is served by nobody here.
func workerHandler(rdb redis.UniversalClient, metrics http.Handler, healthy func() error, lost func() map[string]string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	// /readyz: Redis reachable and this worker healthy, as the API's.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks, ready := map[string]string{"redis": "ok", "process": "ok"}, true
		if err := rdb.Ping(ctx).Err(); err != nil {
			checks["redis"], ready = err.Error(), false
		}
		if err := healthy(); err != nil {
			checks["process"], ready = err.Error(), false
		}
		body := map[string]any{"ready": ready, "checks": checks}
		if l := lost(); len(l) > 0 {
			checks["stores"], ready = fmt.Sprintf("%d store(s) lost to other nodes", len(l)), false
			body["ready"], body["lost_stores"] = false, l
		}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}
