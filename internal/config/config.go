// Package config is storekeeper's command line: the flags of serve, api and
// worker with their STOREKEEPER_* variables and defaults (Parse, Flags),
// and the checks that turn them into the configuration of each package,
// every error naming the flag to fix (Config.Setup).
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"storekeeper/internal/demo"
	"storekeeper/jobmetrics"
	"storekeeper/jobs"
	"storekeeper/ship"
	"storekeeper/worker"
)

// Modes are the commands that take these flags: serve (API, worker and
// schedules in one process), api and worker.
var Modes = []string{"serve", "api", "worker"}

// Config is what the flags (or STOREKEEPER_* variables) of one mode say.
type Config struct {
	Mode string

	Listen, Redis, LogFormat, MetricsToken string
	PushAllowPrivate                       bool
	JobRetention                           time.Duration
	RedisMinReplicas                       int
	RedisMinReplicasTimeout                time.Duration

	// serve and api
	Tokens, AllowedOrigins, PublicURL, TrustedProxies, TLSCert, TLSKey string
	PushPerToken, WSMaxWatchers, WSMaxFilters                          int
	MetricsStoreSeries                                                 int

	// serve and worker
	DataDir, BackupDir, Node, Stores, PushSubscriber               string
	Webhooks, BackupTargets, BackupEncryptTo                       []string
	RPO, RTO                                                       time.Duration
	BackupIdentity, BackupNamingKey                                string
	BackupUploadLimit                                              string
	ShipInterval, ShipMaxLag, PITRWindow                           time.Duration
	ShipSegmentSize, ShipBuffer                                    string
	ScheduleCompact, ScheduleBackup, ScheduleVerify, ScheduleDrill string
	ScheduleSpread                                                 time.Duration
	TaskCheckInterval                                              time.Duration
	AutoRestore, BackupRetention                                   string
	AutoRestoreLimit, Concurrency                                  int
	LeaseTTL, ShutdownTimeout                                      time.Duration
	Demo                                                           bool

	// Args are the arguments after the flags; the binary ignores them.
	Args []string
}

// EnvName is the variable that sets a flag: --backup-dir is
// STOREKEEPER_BACKUP_DIR.
func EnvName(flagName string) string {
	return "STOREKEEPER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// NewFlagSet defines the flags of mode (serve, api or worker) on a new
// flag set that writes its messages and --help to output; parsing it fills
// the returned Config.
func NewFlagSet(mode string, output io.Writer) (*flag.FlagSet, *Config) {
	c := &Config{Mode: mode}
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	fs.SetOutput(output)
	host, _ := os.Hostname()
	env := func(name string) string { return " (env " + EnvName(name) + ")" }
	str := func(p *string, name, def, help string) { fs.StringVar(p, name, def, help+env(name)) }
	str(&c.Listen, "listen", "127.0.0.1:8080", "HTTP address")
	str(&c.Redis, "redis", "", "redis:// or rediss:// URL, or redis+sentinel://[:password@]host:port[,host:port…]/master[/db]; empty: an in-process Redis, in memory only")
	str(&c.LogFormat, "log-format", "text", "log format: text or json")
	if mode != "worker" {
		str(&c.Tokens, "tokens", "", "API tokens name:role:token,… (role viewer or operator) or @file; empty: one operator token is generated and printed, and only loopback is served")
		str(&c.AllowedOrigins, "allowed-origins", "", "comma-separated origins (https://host:port) allowed to open WebSockets and send requests that change something, besides the server's own")
		str(&c.PublicURL, "public-url", "", "the URL users reach the server at (scheme://host[:port], e.g. behind a proxy): browsers on its origin may act; empty: the scheme and address of --listen")
		str(&c.TrustedProxies, "trusted-proxies", "", "comma-separated IP addresses or CIDRs of reverse proxies whose X-Forwarded-For / X-Real-IP name the client in the access log; empty: none, the peer address is logged")
		str(&c.TLSCert, "tls-cert", "", "TLS certificate file (with --tls-key)")
		str(&c.TLSKey, "tls-key", "", "TLS key file")
		fs.IntVar(&c.PushPerToken, "push-subscriptions-per-token", 8, "Web Push subscriptions one token may keep"+env("push-subscriptions-per-token"))
		fs.IntVar(&c.WSMaxWatchers, "ws-max-watchers-per-token", 64, "WebSocket watchers one token may have open at once on this API process (each API process counts its own); one more is refused with 429 too_many_watchers; negative: no limit"+env("ws-max-watchers-per-token"))
		fs.DurationVar(&c.RTO, "rto", 0, "recovery time objective: /metrics exports it (storekeeper_rto_seconds) and the alert rules fire when a store's last drill took longer; 0: not exported"+env("rto"))
		fs.DurationVar(&c.RPO, "rpo", 0, "recovery point objective: /metrics exports it (storekeeper_rpo_seconds) and the alert rules fire when a store's newest backup on a backup target, or the newest a drill proved restorable, is older; 0: not exported"+env("rpo"))
		fs.IntVar(&c.WSMaxFilters, "ws-max-filters", 100, "filter values (store, job and kind together) one WebSocket watcher may give; more is refused with 400 too_many_filters; negative: no limit"+env("ws-max-filters"))
	}
	fs.IntVar(&c.MetricsStoreSeries, "metrics-store-series", jobmetrics.DefaultStoreSeries, "the most stores for which /metrics exports per-store series (storekeeper_store_healthy, storekeeper_backup_age_seconds, …); above it only the aggregates (storekeeper_stores, …_max, …_stores), which are always exported; 0: never"+env("metrics-store-series"))
	str(&c.MetricsToken, "metrics-token", "", "bearer token /metrics requires (at least 16 characters; Prometheus authorization credentials or basic_auth password); empty: /metrics is open")
	fs.BoolVar(&c.PushAllowPrivate, "push-allow-private", false, "let Web Push endpoints be http or resolve to loopback, private or link-local addresses (tests, a push service inside the network); off: https to public addresses only, checked at subscribe time and at every connection"+env("push-allow-private"))
	if mode != "api" {
		str(&c.DataDir, "data-dir", "./data", "directory of the stores")
		str(&c.BackupDir, "backup-dir", "./backups", "directory of the backups (not inside --data-dir)")
		str(&c.Node, "node", host, "this node's name; it owns the stores in --data-dir")
		str(&c.Stores, "stores", "", "comma-separated store names to create if missing")
		str(&c.PushSubscriber, "push-subscriber", "mailto:storekeeper@localhost", "the Web Push contact push services may use about this sender: mailto:address or an https URL")
		fs.Var((*multiFlag)(&c.Webhooks), "webhook", "notification webhook url#secret, repeatable (env "+EnvName("webhook")+", space-separated)")
		str(&c.ScheduleCompact, "schedule-compact", worker.DefaultSchedules[jobs.KindCompact], "cron spec for compaction, or off")
		str(&c.ScheduleBackup, "schedule-backup", worker.DefaultSchedules[jobs.KindBackup], "cron spec for backups, or off")
		str(&c.ScheduleVerify, "schedule-verify", worker.DefaultSchedules[jobs.KindVerify], "cron spec for verification, or off")
		str(&c.ScheduleDrill, "schedule-drill", worker.DefaultSchedules[jobs.KindDrill], "cron spec for restore drills (each backup target in turn), or off")
		fs.DurationVar(&c.ScheduleSpread, "schedule-spread", 15*time.Minute, "spread each scheduled slot's runs over this long: each store's run comes at its own fixed offset after the slot (at most the time to the next slot), from a hash of the store and the kind, the same on every node; 0: every store at the slot's instant"+env("schedule-spread"))
		fs.DurationVar(&c.TaskCheckInterval, "task-check-interval", 20*time.Millisecond, "how often each idle worker polls its queues in Redis: the enqueue-to-start latency it adds is up to this long, and each idle worker's polling costs Redis about one script run per interval, so many nodes want a longer one"+env("task-check-interval"))
		str(&c.AutoRestore, "auto-restore", "on", "restore a corrupt store from its newest verified backup: on or off")
		fs.IntVar(&c.AutoRestoreLimit, "auto-restore-limit", 3, "automatic restores per store in any 24 h"+env("auto-restore-limit"))
		str(&c.BackupRetention, "backup-retention", "last=7,daily=7", "backups kept: the newest N, and the newest of each day for D days")
		fs.Var((*multiFlag)(&c.BackupTargets), "backup-target", "NAME=URL of object storage every backup is uploaded to after it is made locally, repeatable, the same on every node: s3://bucket?prefix=p/&region=… (S3 and S3-compatible servers with endpoint=…; credentials from the AWS environment), gs://bucket (Google Cloud Storage; application default credentials), azblob://container (Azure Blob Storage; AZURE_STORAGE_ACCOUNT and its key or credentials) or file:///path (env "+EnvName("backup-target")+", space-separated)")
		fs.Var((*multiFlag)(&c.BackupEncryptTo), "backup-encrypt-to", "age recipient (age1…) every object and manifest uploaded to a backup target is encrypted to, or @file of recipients one per line; repeatable, the same on every node (env "+EnvName("backup-encrypt-to")+", space-separated)")
		str(&c.BackupUploadLimit, "backup-upload-limit", "", "bytes per second all uploads to the backup targets share, e.g. 50M (K, M, G: powers of 1024); empty: no limit")
		fs.DurationVar(&c.ShipInterval, "ship-interval", 250*time.Millisecond, "point-in-time recovery: with --backup-target, every committed write is shipped to the targets in segments sealed this often while writes arrive (or at --ship-segment-size), so a store can be restored to any moment; 0: off (restores go back to a backup)"+env("ship-interval"))
		fs.DurationVar(&c.ShipMaxLag, "ship-max-lag", 500*time.Millisecond, "point-in-time recovery: a store's writes wait while the oldest write not yet on every target is older than this and every target takes segments, so that writers faster than shipping slow to its pace and the shipping lag stays within about twice it (never while a target fails: its segments queue, then become a gap); 0: never hold writes"+env("ship-max-lag"))
		fs.DurationVar(&c.PITRWindow, "pitr-window", ship.DefaultWindow, "how far back a store can be restored to a moment: the backups a restore within it needs are kept besides --backup-retention's (the one each timeline starts from), and shipped segments none needs (before a backup older than it, and of older timelines) are deleted from the targets hourly"+env("pitr-window"))
		str(&c.ShipSegmentSize, "ship-segment-size", "4M", "a shipped segment is sealed early at this size (K, M, G: powers of 1024)")
		str(&c.ShipBuffer, "ship-buffer", "1G", "bytes of segments a store keeps on its node while a target does not take them; past it the oldest are dropped, a gap restores to a moment cannot cross until the next backup (K, M, G: powers of 1024)")
		str(&c.BackupIdentity, "backup-identity", "", "file of age identities (age-keygen's output) that decrypt what the backup targets hold: needed on nodes that restore from a target")
		str(&c.BackupNamingKey, "backup-naming-key", "", "file of at least 32 bytes keying the names of encrypted objects (an HMAC of their hash), the same on every node and never changed; stored on each target encrypted to the recipients, so a node with --backup-identity may leave it out")
		fs.DurationVar(&c.LeaseTTL, "lease-ttl", 15*time.Second, "store ownership lease"+env("lease-ttl"))
		fs.IntVar(&c.Concurrency, "concurrency", 4, "jobs run at once on this node, one per store"+env("concurrency"))
		fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long running jobs may take to finish or stop; after it they are left to asynq, which runs them again, and their stores are not closed cleanly"+env("shutdown-timeout"))
		fs.BoolVar(&c.Demo, "demo", false, "also create the demo stores ("+strings.Join(demo.Names(), ", ")+") with churn and a first backup, keep a light writer on them, and schedule jobs every few minutes"+env("demo"))
	}
	fs.DurationVar(&c.JobRetention, "job-retention", jobs.DefaultRecordRetention, "how long finished job records are kept"+env("job-retention"))
	fs.IntVar(&c.RedisMinReplicas, "redis-min-replicas", 0, "Redis replicas that must confirm (WAIT) each write that accepts a job or ends one before the API answers or a worker lets asynq drop the task, so that a failover to one of them loses neither; fewer in time: 503 redis_unavailable, and a worker leaves the task to asynq. Pair with min-replicas-to-write on Redis. 0: no confirmation, no extra round trip"+env("redis-min-replicas"))
	fs.DurationVar(&c.RedisMinReplicasTimeout, "redis-min-replicas-timeout", jobs.DefaultMinReplicasTimeout, "how long each confirmation waits for --redis-min-replicas replicas; shorter than the Redis read timeout (3s unless --redis sets read_timeout)"+env("redis-min-replicas-timeout"))
	return fs, c
}

// ErrUsage is arguments that do not parse; the flag set has said why on
// its output.
var ErrUsage = errors.New("bad arguments")

// Parse reads the flags of mode from args, then from the variables
// (lookupEnv: os.LookupEnv for the binary) the flags args did not give.
// With --demo, the schedules neither gives default to demo.Schedules. The
// errors are flag.ErrHelp after --help, ErrUsage, or an *Error.
func Parse(mode string, args []string, lookupEnv func(string) (string, bool), output io.Writer) (*Config, error) {
	fs, c := NewFlagSet(mode, output)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	c.Args = fs.Args()
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := lookupEnv(EnvName(f.Name))
		if !ok || given[f.Name] || err != nil {
			return
		}
		given[f.Name] = true
		vals := []string{v}
		if f.Name == "webhook" || f.Name == "backup-target" || f.Name == "backup-encrypt-to" {
			vals = strings.Fields(v)
		}
		for _, v := range vals {
			if e := f.Value.Set(v); e != nil {
				err = &Error{Flag: f.Name, Err: fmt.Errorf("%s: %w", EnvName(f.Name), e)}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if c.Demo {
		for kind, spec := range demo.Schedules {
			if name := "schedule-" + string(kind); !given[name] {
				_ = fs.Set(name, spec)
			}
		}
	}
	return c, nil
}

// A Flag is one flag of serve, api or worker, as a reference lists it.
type Flag struct {
	Name    string   // without the dashes
	Env     string   // the variable that sets it
	Default string   // the default value ("" for none); for node, this host's name
	Usage   string   // what it means, without the variable
	Modes   []string // the commands that take it, of Modes in order
}

// Flags lists every flag of serve, api and worker, sorted by name: what a
// configuration reference documents.
func Flags() []Flag {
	byName := map[string]*Flag{}
	for _, m := range Modes {
		fs, _ := NewFlagSet(m, io.Discard)
		fs.VisitAll(func(f *flag.Flag) {
			if byName[f.Name] == nil {
				usage, _, _ := strings.Cut(f.Usage, " (env ")
				byName[f.Name] = &Flag{Name: f.Name, Env: EnvName(f.Name), Default: f.DefValue, Usage: usage}
			}
			byName[f.Name].Modes = append(byName[f.Name].Modes, m)
		})
	}
	var out []Flag
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[name])
	}
	return out
}

// Logger is the logger --log-format asks for, writing to w.
func (c *Config) Logger(w io.Writer) (*slog.Logger, error) {
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, &Error{Flag: "log-format", Err: fmt.Errorf("%q is not text or json", c.LogFormat)}
}
