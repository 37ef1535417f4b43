package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"storekeeper/api"
	"storekeeper/internal/demo"
	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
	"storekeeper/worker"
)

// Error is bad configuration: the flag to fix (without the dashes; "" when
// no one flag is at fault) and why.
type Error struct {
	Flag string
	Err  error
}

func (e *Error) Error() string {
	if e.Flag == "" {
		return e.Err.Error()
	}
	return "--" + e.Flag + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func flagErr(name string, err error) error { return &Error{Flag: name, Err: err} }

// fieldFlags names the flag that sets each package Config field a flag
// sets: the one place that knows both spellings.
var fieldFlags = map[string]string{
	"api.Listen":                    "listen",
	"api.AllowedOrigins":            "allowed-origins",
	"api.PublicURL":                 "public-url",
	"api.TrustedProxies":            "trusted-proxies",
	"api.MetricsToken":              "metrics-token",
	"api.MetricsStoreSeries":        "metrics-store-series",
	"api.PushSubscriptionsPerToken": "push-subscriptions-per-token",
	"worker.Node":                   "node",
	"worker.Concurrency":            "concurrency",
	"worker.LeaseTTL":               "lease-ttl",
	"worker.ShutdownTimeout":        "shutdown-timeout",
	"worker.Schedules[compact]":     "schedule-compact",
	"worker.Schedules[backup]":      "schedule-backup",
	"worker.Schedules[verify]":      "schedule-verify",
	"worker.Schedules[drill]":       "schedule-drill",
	"worker.ScheduleSpread":         "schedule-spread",
	"worker.TaskCheckInterval":      "task-check-interval",
	"worker.AutoRestore":            "auto-restore",
	"worker.AutoRestoreLimit":       "auto-restore-limit",
	"worker.Webhooks":               "webhook",
	"worker.Push":                   "push-subscriber",
}

// FlagError is err, a package's refusal of its Config, as an *Error that
// names the flag which set the refused field.
func FlagError(err error) error {
	var ae *api.ConfigError
	var we *worker.ConfigError
	switch {
	case errors.As(err, &ae):
		if name, ok := fieldFlags["api."+ae.Field]; ok {
			return flagErr(name, ae.Err)
		}
	case errors.As(err, &we):
		if name, ok := fieldFlags["worker."+we.Field]; ok {
			return flagErr(name, we.Err)
		}
	}
	return &Error{Err: err}
}

// Setup is the configuration of each package a mode runs, from its flags.
type Setup struct {
	Redis Redis // where --redis points
	Jobs  jobs.ClientConfig
	// Store and Worker are set for serve and worker.
	Store  store.Config
	Worker worker.Config
	// API is set for serve and api, but for what only a running process
	// knows (Redis, Metrics, Ready, Status, and Listen as bound); in
	// worker mode, only its MetricsToken.
	API api.Config
	// GeneratedToken is the operator token made for this run when serve or
	// api has no --tokens.
	GeneratedToken string
	// Targets are the --backup-target values, checked, in order; the
	// caller opens them (offsite.Open) into Worker.Targets, with
	// Encryption (nil without --backup-encrypt-to).
	Targets    []Target
	Encryption *offsite.Encryption
	// UploadLimit is --backup-upload-limit in bytes per second; 0: none.
	UploadLimit int64
	// Ship configures shipping the commit logs (point-in-time recovery)
	// when Store.Ship is set (--backup-target with --ship-interval); the
	// caller adds the opened targets.
	Ship ship.Config
}

// Target is one --backup-target.
type Target struct{ Name, URL string }

// Setup checks every flag of c's mode with the packages' own rules, before
// anything is opened or connected to, and returns the packages'
// configurations. Without --tokens it generates an operator token and
// requires a loopback --listen. The errors are *Error.
func (c *Config) Setup(log *slog.Logger) (Setup, error) {
	var s Setup
	s.Jobs = jobs.ClientConfig{RecordRetention: c.JobRetention, MinReplicas: c.RedisMinReplicas, MinReplicasTimeout: c.RedisMinReplicasTimeout}
	if c.Mode != "serve" && c.Redis == "" {
		return s, flagErr("redis", fmt.Errorf("%s needs a shared Redis: the in-process one serves only a single storekeeper serve", c.Mode))
	}
	if err := c.checkMinReplicas(); err != nil {
		return s, err
	}
	if c.MetricsStoreSeries < 0 {
		return s, flagErr("metrics-store-series", errors.New("must not be negative (0: never)"))
	}
	if c.RPO < 0 {
		return s, flagErr("rpo", errors.New("must not be negative"))
	}
	if c.RTO < 0 {
		return s, flagErr("rto", errors.New("must not be negative"))
	}
	s.API = api.Config{AllowedOrigins: splitList(c.AllowedOrigins), PublicURL: c.PublicURL, Listen: c.Listen,
		TLS: c.TLSCert != "", TrustedProxies: splitList(c.TrustedProxies), Jobs: s.Jobs, Logger: log,
		PushAllowPrivate: c.PushAllowPrivate, PushSubscriptionsPerToken: c.PushPerToken,
		MaxWatchersPerToken: c.WSMaxWatchers, MaxWatchFilters: c.WSMaxFilters, MetricsToken: c.MetricsToken, MetricsStoreSeries: c.storeSeries(), RPO: c.RPO, RTO: c.RTO}
	if c.Mode != "worker" {
		if err := c.tokens(&s); err != nil {
			return s, err
		}
		if (c.TLSCert == "") != (c.TLSKey == "") {
			return s, flagErr("tls-cert", errors.New("--tls-cert and --tls-key go together"))
		}
	} else {
		s.API = api.Config{MetricsToken: c.MetricsToken, MetricsStoreSeries: c.storeSeries()}
	}
	if c.Mode != "api" {
		var err error
		if s.Store, err = c.storeConfig(log); err != nil {
			return s, err
		}
		if s.Worker, err = c.workerConfig(log); err != nil {
			return s, err
		}
		s.Worker.Jobs = s.Jobs
		seen := map[string]bool{}
		for _, spec := range c.BackupTargets {
			name, u, err := offsite.ParseSpec(spec)
			if err != nil {
				return s, flagErr("backup-target", err)
			}
			if seen[name] {
				return s, flagErr("backup-target", fmt.Errorf("target %s is given twice", name))
			}
			seen[name] = true
			s.Targets = append(s.Targets, Target{Name: name, URL: u})
		}
		if s.Encryption, err = c.encryption(); err != nil {
			return s, err
		}
		if s.UploadLimit, err = parseBytes(c.BackupUploadLimit); err != nil {
			return s, flagErr("backup-upload-limit", err)
		}
		if err := c.shipConfig(&s); err != nil {
			return s, err
		}
	}
	// A flag always gives its field a value: the zero value, which the
	// packages take for "the default", is refused rather than replaced.
	for _, z := range []struct {
		flag   string
		isZero bool
		why    string
	}{
		{"node", c.Mode != "api" && c.Node == "", "must not be empty"},
		{"concurrency", c.Mode != "api" && c.Concurrency == 0, "must be at least 1"},
		{"lease-ttl", c.Mode != "api" && c.LeaseTTL == 0, "must be at least 3s"},
		{"auto-restore", c.Mode != "api" && c.AutoRestore == "", `"" is not on or off`},
		{"auto-restore-limit", c.Mode != "api" && c.AutoRestoreLimit == 0, "must be at least 1"},
		{"push-subscriptions-per-token", c.Mode != "worker" && c.PushPerToken == 0, "must be at least 1"},
	} {
		if z.isZero {
			return s, flagErr(z.flag, errors.New(z.why))
		}
	}
	if c.Mode != "api" {
		if err := s.Worker.Validate(); err != nil {
			return s, FlagError(err)
		}
	}
	if err := s.API.Validate(); err != nil {
		return s, FlagError(err)
	}
	var err error
	if s.Redis, err = ParseRedis(c.Redis); err != nil {
		return s, err
	}
	return s, c.checkMinReplicasTimeout(s.Redis)
}

// checkMinReplicas checks --redis-min-replicas and its timeout alone.
func (c *Config) checkMinReplicas() error {
	switch {
	case c.RedisMinReplicas < 0:
		return flagErr("redis-min-replicas", fmt.Errorf("%d: must be 0 (no confirmation) or more", c.RedisMinReplicas))
	case c.RedisMinReplicasTimeout <= 0:
		return flagErr("redis-min-replicas-timeout", fmt.Errorf("%s: must be more than 0", c.RedisMinReplicasTimeout))
	case c.RedisMinReplicas > 0 && c.Redis == "":
		return flagErr("redis-min-replicas", errors.New("needs --redis: the in-process Redis has no replicas"))
	}
	return nil
}

// checkMinReplicasTimeout checks that a confirmation's WAIT answers
// within the client's read timeout: the confirmation is a pipeline, read
// under that timeout, and one that times out is sent again.
func (c *Config) checkMinReplicasTimeout(r Redis) error {
	if c.RedisMinReplicas == 0 {
		return nil
	}
	var rt time.Duration
	switch {
	case r.Options != nil:
		rt = r.Options.ReadTimeout
	case r.Failover != nil:
		rt = r.Failover.ReadTimeout
	}
	if rt == 0 {
		rt = 3 * time.Second // go-redis's default
	}
	if rt > 0 && c.RedisMinReplicasTimeout >= rt {
		return flagErr("redis-min-replicas-timeout", fmt.Errorf("%s: must be shorter than the Redis client's read timeout, %s (read_timeout in --redis)", c.RedisMinReplicasTimeout, rt))
	}
	return nil
}

// tokens sets s.API.Tokens from --tokens, or generates one operator token
// when there is none, which only a loopback --listen may serve.
func (c *Config) tokens(s *Setup) error {
	tokens, err := api.ParseTokens(c.Tokens)
	if err != nil {
		return flagErr("tokens", err)
	}
	if len(tokens) == 0 {
		if !loopbackOnly(c.Listen) {
			return flagErr("listen", fmt.Errorf("%s is not a loopback address: without --tokens, storekeeper serves loopback only", c.Listen))
		}
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		s.GeneratedToken = base64.RawURLEncoding.EncodeToString(b)
		tokens = []api.Token{{Name: "admin", Role: api.RoleOperator, Secret: s.GeneratedToken}}
	}
	s.API.Tokens = tokens
	return nil
}

// loopbackOnly reports whether a listen address (host:port) takes
// connections from this machine only: localhost or a loopback IP, not a
// wildcard. (The api package's isLoopback is about a host in a URL.)
func loopbackOnly(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) storeConfig(log *slog.Logger) (store.Config, error) {
	cfg := store.Config{DataDir: c.DataDir, BackupDir: c.BackupDir, Logger: log}
	if c.Demo {
		cfg.Stores = demo.Names()
	}
	if c.Stores != "" {
		for _, n := range strings.Split(c.Stores, ",") {
			n = strings.TrimSpace(n)
			if err := jobs.ValidateStoreName(n); err != nil {
				return cfg, flagErr("stores", err)
			}
			cfg.Stores = append(cfg.Stores, n)
		}
	}
	for _, kv := range strings.Split(c.BackupRetention, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 || (k != "last" && k != "daily") {
			return cfg, flagErr("backup-retention", fmt.Errorf("%q: want last=N,daily=D", c.BackupRetention))
		}
		if k == "last" {
			cfg.Retention.Last = n
		} else {
			cfg.Retention.Daily = n
		}
	}
	return cfg, nil
}

func (c *Config) workerConfig(log *slog.Logger) (worker.Config, error) {
	cfg := worker.Config{Node: c.Node, Logger: log, Concurrency: c.Concurrency, LeaseTTL: c.LeaseTTL,
		AutoRestore: c.AutoRestore, AutoRestoreLimit: c.AutoRestoreLimit, ScheduleSpread: c.ScheduleSpread, TaskCheckInterval: c.TaskCheckInterval,
		Schedules: map[jobs.Kind]string{jobs.KindCompact: c.ScheduleCompact, jobs.KindBackup: c.ScheduleBackup, jobs.KindVerify: c.ScheduleVerify, jobs.KindDrill: c.ScheduleDrill},
		Push:      worker.PushConfig{Subscriber: c.PushSubscriber, AllowPrivate: c.PushAllowPrivate}}
	for _, h := range c.Webhooks {
		u, secret, ok := strings.Cut(h, "#")
		if !ok {
			return cfg, flagErr("webhook", fmt.Errorf("%q: want url#secret", u))
		}
		cfg.Webhooks = append(cfg.Webhooks, worker.Webhook{URL: u, Secret: secret})
	}
	// The flag bounds the whole stop; asynq gives running jobs half of it
	// (at most 10 s) to finish before it requeues them, then they are
	// cancelled and waited for.
	if c.ShutdownTimeout < time.Second {
		return cfg, flagErr("shutdown-timeout", errors.New("must be at least 1s"))
	}
	cfg.ShutdownTimeout = min(10*time.Second, c.ShutdownTimeout/2)
	return cfg, nil
}

// shipConfig reads the --ship-* flags: shipping is on with a backup
// target and a positive --ship-interval.
func (c *Config) shipConfig(s *Setup) error {
	if c.ShipMaxLag < 0 {
		return flagErr("ship-max-lag", errors.New("must not be negative"))
	}
	if c.ShipInterval < 0 {
		return flagErr("ship-interval", errors.New("must not be negative"))
	}
	if c.PITRWindow < time.Minute {
		return flagErr("pitr-window", errors.New("must be at least 1m"))
	}
	seg, err := parseBytes(c.ShipSegmentSize)
	if err != nil || seg > 1<<30 {
		if err == nil {
			err = errors.New("at most 1G")
		}
		return flagErr("ship-segment-size", err)
	}
	buf, err := parseBytes(c.ShipBuffer)
	if err != nil {
		return flagErr("ship-buffer", err)
	}
	s.Store.Ship = len(s.Targets) > 0 && c.ShipInterval > 0
	if s.Store.Ship {
		s.Store.Retention.Window = c.PITRWindow // pruning keeps what a restore to a moment within it needs
	}
	maxLag := c.ShipMaxLag
	if maxLag == 0 {
		maxLag = -1 // never hold writes
	}
	s.Ship = ship.Config{Dir: filepath.Join(c.DataDir, store.MetaDir, "ship"), Interval: c.ShipInterval, MaxLag: maxLag, SegmentSize: int(seg), Buffer: buf, Window: c.PITRWindow}
	return nil
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

// encryption reads --backup-encrypt-to, --backup-identity and
// --backup-naming-key: nil when none is given.
func (c *Config) encryption() (*offsite.Encryption, error) {
	if len(c.BackupEncryptTo) == 0 {
		for flag, v := range map[string]string{"backup-identity": c.BackupIdentity, "backup-naming-key": c.BackupNamingKey} {
			if v != "" {
				return nil, flagErr(flag, errors.New("needs --backup-encrypt-to: targets are encrypted only to recipients"))
			}
		}
		return nil, nil
	}
	if len(c.BackupTargets) == 0 {
		return nil, flagErr("backup-encrypt-to", errors.New("needs --backup-target"))
	}
	e := &offsite.Encryption{}
	for _, v := range c.BackupEncryptTo {
		text := v
		if path, ok := strings.CutPrefix(v, "@"); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, flagErr("backup-encrypt-to", err)
			}
			text = string(b)
		}
		rs, err := offsite.ParseRecipients(text)
		if err != nil {
			return nil, flagErr("backup-encrypt-to", err)
		}
		e.Recipients = append(e.Recipients, rs...)
	}
	// readFlagFile reads the file a flag names and parses it.
	readFlagFile := func(flag, path string, parse func([]byte) error) error {
		if path == "" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			err = parse(b)
		}
		if err != nil {
			return flagErr(flag, err)
		}
		return nil
	}
	if err := readFlagFile("backup-identity", c.BackupIdentity, func(b []byte) (err error) {
		e.Identities, err = offsite.ParseIdentities(b)
		return err
	}); err != nil {
		return nil, err
	}
	if err := readFlagFile("backup-naming-key", c.BackupNamingKey, func(b []byte) (err error) {
		e.NamingKey, err = offsite.ParseNamingKey(b)
		return err
	}); err != nil {
		return nil, err
	}
	if c.BackupNamingKey == "" && len(e.Identities) == 0 {
		return nil, flagErr("backup-naming-key", errors.New("needed with --backup-encrypt-to, unless --backup-identity can recover it from the targets"))
	}
	return e, nil
}

// parseBytes reads a byte count: digits with an optional K, M or G
// (powers of 1024); empty is 0.
func parseBytes(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(v[len(v)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	digits := v
	if mult > 1 {
		digits = v[:len(v)-1]
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q: want a positive number of bytes, e.g. 52428800 or 50M", v)
	}
	return n * mult, nil
}

// storeSeries is --metrics-store-series as jobmetrics.Config.StoreSeries
// (where 0 means the default and negative never).
func (c *Config) storeSeries() int {
	if c.MetricsStoreSeries == 0 {
		return -1
	}
	return c.MetricsStoreSeries
}
