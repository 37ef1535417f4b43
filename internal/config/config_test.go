package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"storekeeper/api"
	"storekeeper/jobs"
	"storekeeper/worker"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var quiet = slog.New(slog.DiscardHandler)

// A flag on the command line wins over its variable; a variable sets a
// flag not given; --demo moves the schedules no flag or variable sets.
func TestParse(t *testing.T) {
	c, err := Parse("serve", []string{"--concurrency", "2", "--demo", "--schedule-verify", "off", "extra"}, env(map[string]string{
		"STOREKEEPER_CONCURRENCY": "9", "STOREKEEPER_NODE": "n7", "STOREKEEPER_WEBHOOK": "https://a#s1 https://b#s2",
		"STOREKEEPER_SCHEDULE_BACKUP": "@every 1h"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 2 || c.Node != "n7" || !slices.Equal(c.Webhooks, []string{"https://a#s1", "https://b#s2"}) || !slices.Equal(c.Args, []string{"extra"}) {
		t.Errorf("parsed %+v", c)
	}
	if c.ScheduleVerify != "off" || c.ScheduleBackup != "@every 1h" || c.ScheduleCompact != "@every 10m" {
		t.Errorf("schedules %q %q %q; want off, the variable's, the demo's", c.ScheduleVerify, c.ScheduleBackup, c.ScheduleCompact)
	}
	if _, err := Parse("serve", []string{"--bogus"}, env(nil), io.Discard); !errors.Is(err, ErrUsage) {
		t.Errorf("--bogus: %v, want ErrUsage", err)
	}
	if _, err := Parse("serve", []string{"--help"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v, want flag.ErrHelp", err)
	}
	var ce *Error
	if _, err := Parse("worker", nil, env(map[string]string{"STOREKEEPER_LEASE_TTL": "soon"}), io.Discard); !errors.As(err, &ce) || ce.Flag != "lease-ttl" {
		t.Errorf("STOREKEEPER_LEASE_TTL=soon: %v, want an *Error for lease-ttl", err)
	}
}

// Every package field a flag sets is refused under that flag's name.
func TestSetupNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		mode string
		args []string
		flag string
	}{
		{"serve", []string{"--node", "a b"}, "node"},
		{"serve", []string{"--concurrency", "-1"}, "concurrency"},
		{"serve", []string{"--concurrency", "0"}, "concurrency"},
		{"serve", []string{"--lease-ttl", "2s"}, "lease-ttl"},
		{"serve", []string{"--schedule-compact", "x"}, "schedule-compact"},
		{"serve", []string{"--schedule-backup", "x"}, "schedule-backup"},
		{"serve", []string{"--schedule-verify", "x"}, "schedule-verify"},
		{"serve", []string{"--auto-restore", "x"}, "auto-restore"},
		{"serve", []string{"--auto-restore-limit", "-1"}, "auto-restore-limit"},
		{"serve", []string{"--webhook", "ftp://x#s"}, "webhook"},
		{"serve", []string{"--backup-target", "vault"}, "backup-target"},
		{"serve", []string{"--backup-upload-limit", "fast"}, "backup-upload-limit"},
		{"serve", []string{"--backup-upload-limit", "0"}, "backup-upload-limit"},
		{"serve", []string{"--rpo", "-1h"}, "rpo"},
		{"serve", []string{"--rto", "-1m"}, "rto"},
		{"serve", []string{"--backup-target", "vault=ftp://bucket"}, "backup-target"},
		{"serve", []string{"--backup-target", "v=file:///a", "--backup-target", "v=file:///b"}, "backup-target"},
		{"serve", []string{"--backup-encrypt-to", "age1x"}, "backup-encrypt-to"}, // no target
		{"serve", []string{"--backup-target", "v=file:///a", "--backup-encrypt-to", "not-a-recipient"}, "backup-encrypt-to"},
		{"serve", []string{"--backup-target", "v=file:///a", "--backup-identity", "/x"}, "backup-identity"}, // no recipients
		{"serve", []string{"--backup-target", "v=file:///a", "--backup-encrypt-to", "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}, "backup-naming-key"},
		{"serve", []string{"--push-subscriber", "x"}, "push-subscriber"},
		{"serve", []string{"--shutdown-timeout", "10ms"}, "shutdown-timeout"},
		{"serve", []string{"--listen", "nonsense"}, "listen"},
		{"api", []string{"--redis", "redis://h:6379/0", "--tokens", "a:viewer:0123456789abcdef", "--listen", "nonsense"}, "listen"},
		{"serve", []string{"--allowed-origins", "x"}, "allowed-origins"},
		{"serve", []string{"--public-url", "x"}, "public-url"},
		{"serve", []string{"--trusted-proxies", "x"}, "trusted-proxies"},
		{"serve", []string{"--metrics-token", "x"}, "metrics-token"},
		{"serve", []string{"--push-subscriptions-per-token", "-1"}, "push-subscriptions-per-token"},
		{"serve", []string{"--redis", "redis://h:6379/x"}, "redis"},
		{"worker", nil, "redis"},
		{"serve", []string{"--redis", "redis://h:6379/0", "--redis-min-replicas", "-1"}, "redis-min-replicas"},
		{"serve", []string{"--redis-min-replicas", "1"}, "redis-min-replicas"}, // the in-process Redis has no replicas
		{"api", []string{"--redis", "redis://h:6379/0", "--tokens", "a:viewer:0123456789abcdef", "--redis-min-replicas-timeout", "0s"}, "redis-min-replicas-timeout"},
		{"worker", []string{"--redis", "redis://h:6379/0", "--redis-min-replicas-timeout", "-1s"}, "redis-min-replicas-timeout"},
		{"worker", []string{"--redis", "redis://h:6379/0", "--redis-min-replicas", "1", "--redis-min-replicas-timeout", "3s"}, "redis-min-replicas-timeout"},
		{"serve", []string{"--redis", "redis://h:6379/0?read_timeout=500ms", "--redis-min-replicas", "2"}, "redis-min-replicas-timeout"},
		{"serve", []string{"--redis", "redis+sentinel://h:26379/m", "--redis-min-replicas", "1", "--redis-min-replicas-timeout", "1h"}, "redis-min-replicas-timeout"},
	} {
		cfg, err := Parse(c.mode, c.args, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cfg.Setup(quiet)
		var ce *Error
		if !errors.As(err, &ce) || ce.Flag != c.flag {
			t.Errorf("%s %q: %v, want an *Error for --%s", c.mode, c.args, err, c.flag)
		}
	}
	for field := range fieldFlags {
		pkg, name, _ := strings.Cut(field, ".")
		var err error = &worker.ConfigError{Field: name, Err: errors.New("x")}
		if pkg == "api" {
			err = &api.ConfigError{Field: name, Err: errors.New("x")}
		}
		if ce := FlagError(err).(*Error); ce.Flag != fieldFlags[field] || !hasFlag(ce.Flag) {
			t.Errorf("%s: mapped to --%s, which no mode has", field, ce.Flag)
		}
	}
}

// hasFlag tells whether some mode has the flag.
func hasFlag(name string) bool {
	for _, m := range Modes {
		if fs, _ := NewFlagSet(m, io.Discard); fs.Lookup(name) != nil {
			return true
		}
	}
	return false
}

// The defaults make a valid configuration, whose packages' settings are
// what the flags say.
func TestSetupDefaults(t *testing.T) {
	c, err := Parse("serve", []string{"--stores", "a, b", "--backup-retention", "last=3,daily=2", "--shutdown-timeout", "4s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Setup(quiet)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Redis.InProcess() || s.GeneratedToken == "" || len(s.API.Tokens) != 1 || s.API.Tokens[0].Secret != s.GeneratedToken {
		t.Errorf("no --redis, no --tokens: %+v", s)
	}
	if !slices.Equal(s.Store.Stores, []string{"a", "b"}) || s.Store.Retention.Last != 3 || s.Store.Retention.Daily != 2 {
		t.Errorf("store config %+v", s.Store)
	}
	if s.Worker.Concurrency != 4 || s.Worker.ShutdownTimeout != 2e9 || s.Worker.Schedules[jobs.KindBackup] != worker.DefaultSchedules[jobs.KindBackup] ||
		s.Worker.ScheduleSpread != 15*time.Minute || s.Worker.TaskCheckInterval != 20*time.Millisecond {
		t.Errorf("worker config %+v", s.Worker)
	}
	c.Redis = "redis+sentinel://:pw@h1:26379,h2:26379/mymaster/2"
	if s, err = c.Setup(quiet); err != nil || s.Redis.Failover == nil || s.Redis.Failover.MasterName != "mymaster" || s.Redis.Failover.DB != 2 ||
		len(s.Redis.Failover.SentinelAddrs) != 2 || strings.Contains(s.Redis.Redacted(), "pw") {
		t.Errorf("sentinel: %+v %v", s.Redis, err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.1:80": false, "example.com:80": false, "nonsense": false} {
		if got := loopbackOnly(addr); got != want {
			t.Errorf("loopbackOnly(%q) = %v", addr, got)
		}
	}
}

// Flags lists each flag once with the modes that take it.
func TestFlags(t *testing.T) {
	flags := Flags()
	byName := map[string]Flag{}
	for _, f := range flags {
		byName[f.Name] = f
	}
	if len(byName) != len(flags) || !slices.IsSortedFunc(flags, func(a, b Flag) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("flags not unique and sorted")
	}
	for name, modes := range map[string][]string{"listen": Modes, "tokens": {"serve", "api"}, "data-dir": {"serve", "worker"}} {
		if f := byName[name]; !slices.Equal(f.Modes, modes) || f.Env != EnvName(name) || f.Usage == "" || strings.Contains(f.Usage, "(env ") {
			t.Errorf("%s: %+v", name, f)
		}
	}
}

// --redis-min-replicas and its timeout, from flags or variables, reach the
// job-layer configuration of the API and the worker alike; the default
// confirms nothing.
func TestMinReplicas(t *testing.T) {
	for _, mode := range Modes {
		args := []string{"--redis", "redis://h:6379/0", "--tokens", "a:viewer:0123456789abcdef"}
		if mode == "worker" {
			args = args[:2]
		}
		c, err := Parse(mode, args, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Setup(quiet)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if s.Jobs.MinReplicas != 0 || s.Jobs.MinReplicasTimeout != jobs.DefaultMinReplicasTimeout || s.Worker.Jobs.MinReplicas != 0 || s.API.Jobs.MinReplicas != 0 {
			t.Errorf("%s defaults: jobs %+v", mode, s.Jobs)
		}

		c, err = Parse(mode, args, env(map[string]string{"STOREKEEPER_REDIS_MIN_REPLICAS": "2", "STOREKEEPER_REDIS_MIN_REPLICAS_TIMEOUT": "750ms"}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if s, err = c.Setup(quiet); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if s.Jobs.MinReplicas != 2 || s.Jobs.MinReplicasTimeout != 750*time.Millisecond {
			t.Errorf("%s from the variables: jobs %+v", mode, s.Jobs)
		}
		if mode != "api" && (s.Worker.Jobs.MinReplicas != 2 || s.Worker.Jobs.MinReplicasTimeout != 750*time.Millisecond) {
			t.Errorf("%s: worker jobs %+v", mode, s.Worker.Jobs)
		}
		if mode != "worker" && (s.API.Jobs.MinReplicas != 2 || s.API.Jobs.MinReplicasTimeout != 750*time.Millisecond) {
			t.Errorf("%s: api jobs %+v", mode, s.API.Jobs)
		}
	}
	var ce *Error
	if _, err := Parse("worker", nil, env(map[string]string{"STOREKEEPER_REDIS_MIN_REPLICAS": "one"}), io.Discard); !errors.As(err, &ce) || ce.Flag != "redis-min-replicas" {
		t.Errorf("STOREKEEPER_REDIS_MIN_REPLICAS=one: %v, want an *Error for redis-min-replicas", err)
	}
	// A read timeout the WAIT fits in.
	c, err := Parse("worker", []string{"--redis", "redis://h:6379/0?read_timeout=10s", "--redis-min-replicas", "1", "--redis-min-replicas-timeout", "5s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.Setup(quiet); err != nil || s.Worker.Jobs.MinReplicasTimeout != 5*time.Second {
		t.Errorf("5s within a 10s read timeout: %v", err)
	}
}

// --backup-encrypt-to (inline or @file), --backup-identity and
// --backup-naming-key make the targets' Encryption.
func TestSetupEncryption(t *testing.T) {
	dir := t.TempDir()
	id, _ := age.GenerateX25519Identity()
	recipients := filepath.Join(dir, "recipients")
	identity := filepath.Join(dir, "identity")
	key := filepath.Join(dir, "naming-key")
	for path, body := range map[string]string{recipients: "# ops\n" + id.Recipient().String() + "\n", identity: id.String() + "\n", key: strings.Repeat("k", 40) + "\n"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Parse("serve", []string{"--backup-target", "vault=file://" + dir, "--backup-encrypt-to", "@" + recipients,
		"--backup-encrypt-to", id.Recipient().String(), "--backup-identity", identity, "--backup-naming-key", key,
		"--backup-upload-limit", "50M"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.Setup(quiet)
	if err != nil {
		t.Fatal(err)
	}
	if e := s.Encryption; e == nil || len(e.Recipients) != 2 || len(e.Identities) != 1 || len(e.NamingKey) != 40 {
		t.Fatalf("encryption %+v", s.Encryption)
	}
	if s.UploadLimit != 50<<20 {
		t.Fatalf("upload limit %d, want 50 MiB/s", s.UploadLimit)
	}
	if len(s.Targets) != 1 || s.Targets[0].Name != "vault" {
		t.Fatalf("targets %+v", s.Targets)
	}
}
