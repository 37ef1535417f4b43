package worker

import (
	"errors"
	"testing"
	"time"

	"storekeeper/jobs"
)

// Validate refuses a bad setting with the field that holds it, and takes
// the zero values as the defaults.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		field string // "": valid
	}{
		{"zero values", Config{}, ""},
		{"all set", Config{Node: "n1", Concurrency: 8, LeaseTTL: 3 * time.Second, AutoRestore: "off", AutoRestoreLimit: 1,
			Schedules: map[jobs.Kind]string{jobs.KindBackup: "@every 1h", jobs.KindVerify: "off"},
			Webhooks:  []Webhook{{URL: "https://hooks.example.com/x", Secret: "s"}}, Push: PushConfig{Subscriber: "https://example.com/contact"}}, ""},
		{"node", Config{Node: "a b"}, "Node"},
		{"negative concurrency", Config{Concurrency: -1}, "Concurrency"},
		{"short lease", Config{LeaseTTL: time.Second}, "LeaseTTL"},
		{"negative lease", Config{LeaseTTL: -time.Second}, "LeaseTTL"},
		{"negative shutdown timeout", Config{ShutdownTimeout: -1}, "ShutdownTimeout"},
		{"negative notify timeout", Config{NotifyTimeout: -1}, "NotifyTimeout"},
		{"negative task check", Config{TaskCheckInterval: -1}, "TaskCheckInterval"},
		{"negative reconcile interval", Config{ReconcileInterval: -time.Second}, "ReconcileInterval"},
		{"short reconcile grace", Config{ReconcileGrace: 100 * time.Millisecond}, "ReconcileGrace"},
		{"bad schedule", Config{Schedules: map[jobs.Kind]string{jobs.KindCompact: "every day"}}, "Schedules[compact]"},
		{"short @every", Config{Schedules: map[jobs.Kind]string{jobs.KindVerify: "@every 10ms"}}, "Schedules[verify]"},
		{"empty schedule", Config{Schedules: map[jobs.Kind]string{jobs.KindBackup: ""}}, "Schedules[backup]"},
		{"kind without schedule", Config{Schedules: map[jobs.Kind]string{jobs.KindRestore: "@daily"}}, "Schedules[restore]"},
		{"auto-restore", Config{AutoRestore: "maybe"}, "AutoRestore"},
		{"auto-restore limit", Config{AutoRestoreLimit: -1}, "AutoRestoreLimit"},
		{"webhook without secret", Config{Webhooks: []Webhook{{URL: "https://hooks.example.com/x"}}}, "Webhooks"},
		{"webhook not http", Config{Webhooks: []Webhook{{URL: "ftp://example.com", Secret: "s"}}}, "Webhooks"},
		{"push subscriber", Config{Push: PushConfig{Subscriber: "ops@example.com"}}, "Push"},
	} {
		err := c.cfg.Validate()
		var ce *ConfigError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.field != "" && !errors.As(err, &ce):
			t.Errorf("%s: %v, want a *ConfigError for %s", c.name, err, c.field)
		case c.field != "" && ce.Field != c.field:
			t.Errorf("%s: field %q (%v), want %q", c.name, ce.Field, err, c.field)
		}
	}
}
