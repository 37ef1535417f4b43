package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
)

// Config configures a Worker. Zero values take the defaults.
type Config struct {
	Redis    redis.UniversalClient // required
	Registry *store.Registry       // the stores this node owns (or Stores)
	// Stores, instead of Registry, gives the stores through the seam the
	// worker uses (a fake for make scale's synthetic nodes); set one.
	Stores Stores
	Node   string // default: the host name

	Concurrency int // asynq workers (default 4); one job per store at a time regardless
	// TaskCheckInterval is how often an idle asynq worker polls its queues:
	// asynq's 1 s default makes enqueue-to-start take about a second.
	TaskCheckInterval time.Duration // default 20 ms
	// DelayedTaskCheckInterval is how often retries that are due are
	// moved back to their queue (asynq's default is 5 s).
	DelayedTaskCheckInterval time.Duration // default 1 s
	// RetryDelay is the backoff before attempt n+1 (default: exponential
	// from 2 s, with jitter, capped at 10 min).
	RetryDelay func(n int) time.Duration
	// ShutdownTimeout is how long Shutdown lets running jobs finish before
	// asynq requeues them (default 10 s).
	ShutdownTimeout time.Duration
	LeaseTTL        time.Duration // owner lease lifetime (default 15 s), renewed every third
	Jobs            jobs.ClientConfig
	Logger          *slog.Logger

	// Schedules maps a kind (compact, backup, verify) to a cron spec (five
	// fields, or six with seconds first; @daily, @every 6h …) or "off".
	// Missing kinds take DefaultSchedules. Times are UTC unless the spec
	// starts with CRON_TZ=. @every intervals are aligned to the Unix epoch,
	// so every process agrees on the slots.
	Schedules map[jobs.Kind]string
	// ScheduleSpread spreads each slot's runs: a store's run of a kind's
	// slot comes a fixed fraction of the spread after the slot (at most
	// the time to the following slot), from a hash of the store and the
	// kind, the same on every node. 0: every store at the slot's instant.
	ScheduleSpread time.Duration
	// AutoRestore is the automatic restore policy, "on" (default) or "off".
	AutoRestore string
	// AutoRestoreLimit is the most automatic restores per store in any 24 h
	// (the circuit breaker; default 3).
	AutoRestoreLimit int
	// Webhooks are the notification sinks; every node must have the same.
	Webhooks []Webhook
	// NotifyTimeout bounds one delivery (default 10 s).
	NotifyTimeout time.Duration
	// HTTPClient delivers webhooks and Web Push messages (default: a
	// client with NotifyTimeout).
	HTTPClient *http.Client
	// Push configures Web Push delivery to subscribed browsers.
	Push PushConfig
	// Metrics, when set, receives the worker's counters of the jobs it
	// runs (storekeeper_worker_*).
	Metrics prometheus.Registerer
	// ReconcileInterval is how often the reconciler settles the jobs asynq
	// ended without the worker and requeues tasks stranded with an expired
	// lease (default 15 s). ReconcileGrace leaves alone a job whose record
	// is younger than it, on Redis's clock, since its task may not have
	// reached asynq yet (default 10 s; at least 1 s).
	ReconcileInterval time.Duration
	ReconcileGrace    time.Duration
	// Targets are the backup targets (package offsite) every backup is
	// uploaded to and a restore may fetch from; the caller opens and
	// closes them.
	Targets []*offsite.Target
	// Shipper, when set, ships the stores' commit logs to the targets
	// (package ship; the registry must have store.Config.Ship): the worker
	// runs it, restores to a moment (Params.At) through it, and restores
	// a corrupt store automatically to the moment the damage was found.
	Shipper *ship.Shipper
	// Clock drives the scheduler, the progress throttle, the heartbeat
	// that renews the leases and the reconciler (default: the real clock;
	// tests pass a fake one).
	Clock clockwork.Clock
}

// DefaultSchedules: verify daily, backup every 6 h, compact daily, all
// cheap when there is nothing to do; a restore drill weekly (it reads a
// whole backup).
var DefaultSchedules = map[jobs.Kind]string{
	jobs.KindVerify:  "30 2 * * *",
	jobs.KindBackup:  "0 */6 * * *",
	jobs.KindCompact: "0 3 * * *",
	jobs.KindDrill:   "0 4 * * 0",
}

func (c *Config) withDefaults() error {
	if c.Redis == nil || (c.Registry == nil) == (c.Stores == nil) {
		return errors.New("worker: Redis and one of Registry and Stores are required")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Node == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("worker: node name: %w", err)
		}
		if err := jobs.ValidateNodeName(host); err != nil {
			return fmt.Errorf("worker: the host name as node name: %w", err)
		}
		c.Node = host
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.TaskCheckInterval == 0 {
		c.TaskCheckInterval = 20 * time.Millisecond
	}
	if c.DelayedTaskCheckInterval == 0 {
		c.DelayedTaskCheckInterval = time.Second
	}
	if c.RetryDelay == nil {
		c.RetryDelay = func(n int) time.Duration {
			d := 2 * time.Second << min(n, 8)
			return min(d, 10*time.Minute) + time.Duration(float64(d)*0.2*randFloat())
		}
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 15 * time.Second
	}
	if c.ReconcileGrace == 0 {
		c.ReconcileGrace = reconcileGrace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	sched := map[jobs.Kind]string{}
	for k, v := range DefaultSchedules {
		sched[k] = v
	}
	for k, v := range c.Schedules {
		sched[k] = v
	}
	c.Schedules = sched
	if c.AutoRestore == "" {
		c.AutoRestore = "on"
	}
	if c.AutoRestoreLimit == 0 {
		c.AutoRestoreLimit = 3
	}
	if err := c.Push.withDefaults(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = 10 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: c.NotifyTimeout}
	}
	c.Jobs = c.Jobs.WithDefaults()
	return nil
}

// ConfigError is a Config field Validate refused. Field names it as Go
// spells it ("Concurrency", "Schedules[backup]", "Push"), so that a
// command can name the flag that set it.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "worker: " + e.Field + ": " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks the settings of c, zero values standing for their
// defaults. It leaves out Redis and Registry, which New also requires, so
// that a command can check its configuration before it connects to
// anything. The errors are *ConfigError.
func (c Config) Validate() error {
	bad := func(field string, err error) error { return &ConfigError{Field: field, Err: err} }
	if c.Node != "" {
		if err := jobs.ValidateNodeName(c.Node); err != nil {
			return bad("Node", err)
		}
	}
	if c.Concurrency < 0 {
		return bad("Concurrency", errors.New("must be at least 1"))
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < 3*time.Second {
		return bad("LeaseTTL", errors.New("must be at least 3s"))
	}
	if c.ReconcileGrace != 0 && c.ReconcileGrace < time.Second {
		return bad("ReconcileGrace", errors.New("must be at least 1s: an enqueue writes the record before its task"))
	}
	for field, d := range map[string]time.Duration{"TaskCheckInterval": c.TaskCheckInterval,
		"DelayedTaskCheckInterval": c.DelayedTaskCheckInterval, "ShutdownTimeout": c.ShutdownTimeout, "NotifyTimeout": c.NotifyTimeout,
		"ReconcileInterval": c.ReconcileInterval, "ScheduleSpread": c.ScheduleSpread} {
		if d < 0 {
			return bad(field, errors.New("must not be negative"))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Schedules)) {
		field := "Schedules[" + string(k) + "]"
		if _, ok := DefaultSchedules[k]; !ok {
			return bad(field, fmt.Errorf("no schedule for kind %q (only compact, backup, verify, drill)", k))
		}
		if _, err := parseSchedule(c.Schedules[k]); err != nil {
			return bad(field, err)
		}
	}
	if c.AutoRestore != "" && c.AutoRestore != "on" && c.AutoRestore != "off" {
		return bad("AutoRestore", fmt.Errorf("%q is not on or off", c.AutoRestore))
	}
	if c.AutoRestoreLimit < 0 {
		return bad("AutoRestoreLimit", errors.New("must be at least 1"))
	}
	for i, h := range c.Webhooks {
		if err := h.validate(); err != nil {
			return bad("Webhooks", fmt.Errorf("webhook %d: %w", i+1, err))
		}
	}
	if err := c.Push.Validate(); err != nil {
		return bad("Push", err)
	}
	return nil
}

// asynqLogger quiets asynq's own logging into ours.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...)) }
func (l asynqLogger) Info(args ...any)  { l.log.Debug(fmt.Sprint(args...)) }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...)) }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...)) }
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...)); os.Exit(1) }

var _ asynq.Logger = asynqLogger{}
