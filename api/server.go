package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// MaxBody caps request bodies.
const MaxBody = 64 << 10

// Config configures a Server.
type Config struct {
	Redis  redis.UniversalClient // required
	Tokens []Token               // at least one
	// AllowedOrigins may open WebSockets and send requests that change
	// something from browsers besides the server's own origin
	// ("https://ops.example.com"). Clients that send no Origin (CLIs) are
	// not browsers and are not held to it (security.go).
	AllowedOrigins []string
	// PublicURL is the URL users reach the server at
	// ("https://storekeeper.example.com", e.g. behind a proxy): its origin
	// is the server's own. Empty: the scheme (TLS) and host:port of
	// Listen; when Listen is empty, a wildcard (":8080", "0.0.0.0:8080")
	// or port 0, the address each request's connection arrived on. A
	// loopback host stands for localhost, 127.0.0.1 and [::1] alike.
	PublicURL string
	// Listen is the address the server is bound to (the bound one, so
	// port 0 is resolved), and TLS whether it serves HTTPS there.
	Listen string
	TLS    bool
	// TrustedProxies are the proxies (IP addresses or CIDRs) whose
	// X-Forwarded-For and X-Real-IP name the client in the access log.
	// Empty: none; the peer address is the client.
	TrustedProxies []string
	Jobs           jobs.ClientConfig
	Logger         *slog.Logger
	// Metrics is where the API registers its collectors (and asynq's queue
	// collector); /metrics serves it. Default: a new registry.
	Metrics *prometheus.Registry
	// Ready reports this process's own components' health for /readyz
	// (e.g. the worker started); nil means only Redis is checked.
	Ready func() error
	// Status adds what /readyz's body should say about this process
	// without failing readiness (e.g. stores the worker lost to another
	// node: an all-in-one server keeps serving its other stores).
	Status func() map[string]any
	// StuckWatcher is how long a WebSocket watcher may keep losing events
	// before it is disconnected (default 10 s).
	StuckWatcher time.Duration
	// MaxWatchersPerToken caps the WebSocket watchers one token may have
	// open at once on this API process (each process counts its own);
	// one more is refused with 429 too_many_watchers. 0: 64; negative:
	// no cap.
	MaxWatchersPerToken int
	// MaxWatchFilters caps one watcher's filter values (store, job and
	// kind together); more is refused with 400 too_many_filters. 0: 100;
	// negative: no cap.
	MaxWatchFilters int
	// Clock ages the /metrics snapshot and the copies of the store index,
	// nodes and schedules requests share (default: the real clock; tests
	// set a fake one).
	Clock clockwork.Clock
	// MetricsToken, when set, is the bearer token /metrics requires (401
	// without it); empty: /metrics is open.
	MetricsToken string
	// MetricsStoreSeries is the most stores for which /metrics exports
	// per-store series (jobmetrics.Config.StoreSeries: 0 the default,
	// negative never); the aggregates are always exported.
	MetricsStoreSeries int
	// RPO, when set, is exported on /metrics (storekeeper_rpo_seconds) for
	// the alert on the backup targets' lag.
	RPO time.Duration
	// RTO, when set, is exported on /metrics (storekeeper_rto_seconds) for
	// the alert rules to compare the stores' measured drill durations with.
	RTO time.Duration
	// PushAllowPrivate lets browsers subscribe Web Push endpoints that
	// are http or whose host is not public (loopback, private,
	// link-local): for tests and push services inside the network. Off,
	// an endpoint must be https to a host that resolves to public
	// addresses only (the worker checks again as it connects; set its
	// PushConfig.AllowPrivate alike).
	PushAllowPrivate bool
	// PushResolver resolves endpoint hosts at subscribe time (default
	// net.DefaultResolver); tests stub it.
	PushResolver PushResolver
	// PushSubscriptionsPerToken caps one token's Web Push subscriptions;
	// one more is refused with 409 too_many_subscriptions. 0: 8.
	PushSubscriptionsPerToken int
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	rdb     redis.UniversalClient
	log     *slog.Logger
	tokens  []Token
	sums    [][sha256.Size]byte // of each token's secret, compared per request
	jobs    *jobsdb.Client
	insp    *asynq.Inspector
	engine  *gin.Engine
	hub     *hub
	metrics *metrics
	origins map[string]bool // AllowedOrigins, canonical (security.go)
	own     []string        // the server's own origins when configured
	scheme  string          // http, or https with TLS
	// Shared by requests (snapshot.go): the store names and owners a page
	// of the store list walks, the nodes every store view needs, and the
	// schedules the dashboard shows.
	index         snapshot[storeIndex]
	nodes         snapshot[nodeState]
	scheduled     snapshot[[]jobs.NodeSchedules]
	stopSnapshots context.CancelFunc // ends their background refreshes
}

// New builds the server; Start runs its event tailer.
func New(cfg Config) (*Server, error) {
	if cfg.Redis == nil {
		return nil, errors.New("api: Redis is required")
	}
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("api: at least one token is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	cfg.Jobs = cfg.Jobs.WithDefaults()
	cfg.Jobs.Autopipeline = true // the API is where many callers enqueue at once
	if cfg.StuckWatcher == 0 {
		cfg.StuckWatcher = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	s := &Server{cfg: cfg, rdb: cfg.Redis, log: cfg.Logger.With("component", "api"), tokens: cfg.Tokens,
		jobs: jobsdb.NewClient(cfg.Redis, cfg.Jobs), insp: asynq.NewInspectorFromRedisClient(cfg.Redis)}
	for _, t := range cfg.Tokens {
		s.sums = append(s.sums, sha256.Sum256([]byte(t.Secret)))
	}
	var bg context.Context
	bg, s.stopSnapshots = context.WithCancel(context.Background())
	s.index = snapshot[storeIndex]{maxAge: storeIndexMaxAge, read: s.readStoreIndex, clock: cfg.Clock, base: bg}
	s.nodes = snapshot[nodeState]{maxAge: nodesMaxAge, read: s.readNodes, clock: cfg.Clock, base: bg}
	s.scheduled = snapshot[[]jobs.NodeSchedules]{maxAge: nodesMaxAge, clock: cfg.Clock, base: bg, read: func(ctx context.Context) ([]jobs.NodeSchedules, error) {
		return jobsdb.Schedules(ctx, s.rdb)
	}}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := s.setupOrigins(cfg); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.hub = newHub(s)
	s.engine = s.routes()
	return s, nil
}

// Handler is the HTTP handler: API, WebSocket, asynqmon, metrics.
func (s *Server) Handler() http.Handler { return s.engine }

// Start refuses a Redis whose key layout is another version
// (jobsdb.CheckLayout), then runs the one events tailer of this process,
// which feeds every WebSocket watcher, until ctx ends or Close.
func (s *Server) Start(ctx context.Context) error {
	if err := jobsdb.CheckLayout(ctx, s.rdb); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return s.hub.Start(ctx)
}

// Stop disconnects the watchers cleanly (close frame 1001) and stops the
// tailer and every goroutine Start began, waiting for them until ctx ends,
// after ending the background refreshes of the copies requests share.
func (s *Server) Stop(ctx context.Context) error {
	s.stopSnapshots()
	s.index.stop()
	s.nodes.stop()
	s.scheduled.stop()
	return s.hub.Stop(ctx)
}

// Close is Stop with no deadline.
func (s *Server) Close() { _ = s.Stop(context.Background()) }

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.ContextWithFallback = true
	_ = e.SetTrustedProxies(s.cfg.TrustedProxies) // checked in New; nil trusts none (gin.New trusts all)
	e.Use(s.requestID, s.accessLog, s.recoverer, s.guard, s.limitBody)
	e.NoRoute(func(c *gin.Context) { s.fail(c, errNotFound) })
	e.NoMethod(func(c *gin.Context) { s.fail(c, errMethod) })

	viewer, operator := s.require(RoleViewer, false), s.require(RoleOperator, false)
	api := e.Group("/api")
	api.GET("/openapi.json", s.openAPI)
	for _, kind := range []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify, jobs.KindDrill} {
		api.POST("/admin/"+string(kind), operator, s.enqueueAll(kind))
		api.POST("/admin/"+string(kind)+"/:store", operator, s.enqueueOne(kind))
	}
	api.POST("/admin/restore/:store", operator, s.restore)
	api.POST("/admin/adopt/:store", operator, s.adopt)
	api.GET("/jobs", viewer, s.listJobs)
	api.GET("/jobs/:id", viewer, s.getJob)
	api.DELETE("/jobs/:id", operator, s.cancelJob)
	api.GET("/history", viewer, s.history)
	api.GET("/stores", viewer, s.listStores)
	api.GET("/stores/:store", viewer, s.getStore)
	api.GET("/stores/:store/backups", viewer, s.storeBackups)
	api.POST("/stores/:store/pause", operator, s.pause)
	api.POST("/stores/:store/resume", operator, s.resume)
	api.GET("/schedules", viewer, s.schedules)
	api.GET("/nodes", viewer, s.listNodes)
	api.GET("/dashboard", viewer, s.dashboard)
	api.GET("/push/key", viewer, s.pushKey)
	api.POST("/push/subscriptions", viewer, s.subscribePush)
	api.DELETE("/push/subscriptions", viewer, s.unsubscribePush)
	e.GET("/ws", s.wsOrigin, s.require(RoleViewer, true), s.wsUpgrade, s.hub.serve)

	// asynqmon, read-only: retrying, deleting or archiving a task there
	// would bypass storekeeper's records and locks. It shares the client;
	// the client is closed by whoever made it, so the handler is never
	// closed.
	// HTTP Basic is accepted here only: a browser that signed in to it
	// sends those credentials with every request to this server. GET
	// only: read-only asynqmon refuses every other method anyway, and
	// this way with the API's JSON 405.
	mon := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: sharedRedis{s.rdb}, ReadOnly: true})
	monCSP := monitoringPolicy(mon)
	monHeaders := func(c *gin.Context) { pageHeaders(c, monCSP); c.Next() }
	monOperator := s.requireBasic(RoleOperator)
	e.GET("/monitoring", monHeaders, monOperator, gin.WrapH(mon))
	e.GET("/monitoring/*path", monHeaders, monOperator, gin.WrapH(mon))

	e.GET("/metrics", gin.WrapH(s.metrics.handler()))
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	s.pageRoutes(e)
	return e
}

// sharedRedis hands asynqmon the server's own client.
type sharedRedis struct{ c redis.UniversalClient }

func (r sharedRedis) MakeRedisClient() any { return r.c }

func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := gin.H{}
	ready := true
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		checks["redis"], ready = err.Error(), false
	} else {
		checks["redis"] = "ok"
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			checks["process"], ready = err.Error(), false
		} else {
			checks["process"] = "ok"
		}
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	body := gin.H{"ready": ready, "checks": checks}
	if s.cfg.Status != nil {
		for k, v := range s.cfg.Status() {
			if _, taken := body[k]; !taken {
				body[k] = v
			}
		}
	}
	c.JSON(status, body)
}

// requestID gives every request the server's own id, echoed in
// X-Request-Id and in every log line about it. A client's X-Request-Id is
// kept beside it (log field client_request_id, echoed in
// X-Client-Request-Id) only when it is one short token
// (^[A-Za-z0-9._-]{1,64}$): a client never chooses the server's id, nor
// writes anything else into the log.
func (s *Server) requestID(c *gin.Context) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	c.Set("request_id", id)
	c.Header("X-Request-Id", id)
	if v := c.Request.Header.Values("X-Request-Id"); len(v) == 1 && clientRequestID.MatchString(v[0]) {
		c.Set("client_request_id", v[0])
		c.Header("X-Client-Request-Id", v[0])
	}
	c.Next()
}

func requestID(c *gin.Context) string { return c.GetString("request_id") }

// accessLog logs each request once, with tokens redacted from the query.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.metrics.request(route, c.Request.Method, c.Writer.Status())
	if !s.log.Enabled(c, slog.LevelInfo) {
		return
	}
	q := c.Request.URL.Query()
	if q.Has("token") {
		q.Set("token", "REDACTED")
	}
	attrs := []any{"request_id", requestID(c), "method", c.Request.Method, "path", c.Request.URL.Path,
		"query", q.Encode(), "status", c.Writer.Status(), "took", time.Since(start), "actor", actor(c), "remote", c.ClientIP()}
	if cid := c.GetString("client_request_id"); cid != "" {
		attrs = append(attrs, "client_request_id", cid)
	}
	s.log.Info("request", attrs...)
}

// recoverer turns a panic into a logged 500 with no stack for the client.
func (s *Server) recoverer(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "request_id", requestID(c), "path", c.Request.URL.Path, "panic", fmt.Sprint(p))
			if !c.Writer.Written() {
				c.AbortWithStatusJSON(errInternal.status, gin.H{"error": errInternal.code, "message": errInternal.msg})
			}
		}
	}()
	c.Next()
}

func (s *Server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > MaxBody {
		s.fail(c, errTooLarge)
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, MaxBody)
	c.Next()
}
