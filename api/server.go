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
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// MaxBody caps request bodies.
const MaxBody = 64 << 10

// Config configures a Server.
type Config struct {
	Redis  redis.UniversalClient // required
	Tokens []Token               // at least one
	// AllowedOrigins may open WebSockets from browsers besides the
	// server's own origin ("https://ops.example.com"). Clients that send
	// no Origin (CLIs) are not browsers and are not held to it.
	AllowedOrigins []string
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
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	rdb     redis.UniversalClient
	log     *slog.Logger
	tokens  []Token
	sums    [][sha256.Size]byte // of each token's secret, compared per request
	jobs    *jobs.Client
	insp    *asynq.Inspector
	engine  *gin.Engine
	hub     *hub
	metrics *metrics
	origins map[string]bool
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
	s := &Server{cfg: cfg, rdb: cfg.Redis, log: cfg.Logger.With("component", "api"), tokens: cfg.Tokens,
		jobs: jobs.NewClient(cfg.Redis, cfg.Jobs), insp: asynq.NewInspectorFromRedisClient(cfg.Redis),
		origins: map[string]bool{}}
	for _, t := range cfg.Tokens {
		s.sums = append(s.sums, sha256.Sum256([]byte(t.Secret)))
	}
	for _, o := range cfg.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("api: allowed origin %q is not scheme://host[:port]", o)
		}
		s.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
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

// Start runs the one events tailer of this process, which feeds every
// WebSocket watcher, until ctx ends or Close.
func (s *Server) Start(ctx context.Context) { s.hub.start(ctx) }

// Close disconnects the watchers cleanly (close frame 1001) and stops the
// tailer.
func (s *Server) Close() { s.hub.close() }

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.ContextWithFallback = true
	e.Use(s.requestID, s.accessLog, s.recoverer, s.limitBody)
	e.NoRoute(func(c *gin.Context) { s.fail(c, errNotFound) })
	e.NoMethod(func(c *gin.Context) { s.fail(c, errMethod) })

	viewer, operator := s.require(RoleViewer, false), s.require(RoleOperator, false)
	api := e.Group("/api")
	api.GET("/openapi.json", s.openAPI)
	for _, kind := range []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify} {
		api.POST("/admin/"+string(kind), operator, s.enqueueAll(kind))
		api.POST("/admin/"+string(kind)+"/:store", operator, s.enqueueOne(kind))
	}
	api.POST("/admin/restore/:store", operator, s.restore)
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
	api.GET("/dashboard", viewer, s.dashboard)
	api.GET("/push/key", viewer, s.pushKey)
	api.POST("/push/subscriptions", viewer, s.subscribePush)
	api.DELETE("/push/subscriptions", viewer, s.unsubscribePush)
	e.GET("/ws", s.require(RoleViewer, true), s.hub.serve)

	// asynqmon, read-only: retrying, deleting or archiving a task there
	// would bypass storekeeper's records and locks. It shares the client;
	// the client is closed by whoever made it, so the handler is never
	// closed.
	mon := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: sharedRedis{s.rdb}, ReadOnly: true})
	e.Any("/monitoring", operator, gin.WrapH(mon))
	e.Any("/monitoring/*path", operator, gin.WrapH(mon))

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

// requestID gives every request an id, echoed in X-Request-Id and in
// every log line about it.
func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader("X-Request-Id")
	if id == "" || len(id) > 64 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	c.Set("request_id", id)
	c.Header("X-Request-Id", id)
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
	s.log.Info("request", "request_id", requestID(c), "method", c.Request.Method, "path", c.Request.URL.Path,
		"query", q.Encode(), "status", c.Writer.Status(), "took", time.Since(start), "actor", actor(c), "remote", c.ClientIP())
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
