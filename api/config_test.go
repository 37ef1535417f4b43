package api

import (
	"errors"
	"testing"
)

// Validate refuses a bad setting with the field that holds it.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name  string
		cfg   Config
		field string // "": valid
	}{
		{"zero values", Config{}, ""},
		{"all set", Config{AllowedOrigins: []string{"https://ops.example.com"}, PublicURL: "https://sk.example.com", Listen: "127.0.0.1:8080",
			TrustedProxies: []string{"10.0.0.0/8", "192.168.1.1"}, MetricsToken: "0123456789abcdef", PushSubscriptionsPerToken: 3}, ""},
		{"origin", Config{AllowedOrigins: []string{"example.com"}}, "AllowedOrigins"},
		{"public URL", Config{PublicURL: "ftp://example.com"}, "PublicURL"},
		{"listen", Config{Listen: "nonsense"}, "Listen"},
		{"proxy", Config{TrustedProxies: []string{"10.0.0.0/33"}}, "TrustedProxies"},
		{"metrics token", Config{MetricsToken: "short"}, "MetricsToken"},
		{"push subscriptions", Config{PushSubscriptionsPerToken: -1}, "PushSubscriptionsPerToken"},
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
