package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"storekeeper/internal/redistest"
)

const metricsToken = "metrics-token-0123456789"

// With a metrics token, /metrics answers 401 (the API's JSON error) to a
// request without it, or with another token (API tokens included), and
// serves one with it; a short token is refused.
func TestMetricsToken(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	tokens, _ := ParseTokens("ops:operator:" + wsToken)
	s, err := New(Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler), MetricsToken: metricsToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	h := s.Handler()
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer " + wsToken}, {"Authorization", "Bearer " + metricsToken + "x"}, {"Authorization", metricsToken}} {
		rec := scrape(t, h, hdr...)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusUnauthorized || body["error"] != "unauthorized" || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("/metrics with %q: %d %s; want 401 unauthorized", hdr, rec.Code, rec.Body)
		}
	}
	for _, hdr := range [][]string{{"Authorization", "Bearer " + metricsToken}, {"Authorization", "Basic " + basic("prometheus", metricsToken)}} {
		if rec := scrape(t, h, hdr...); rec.Code != 200 || !strings.Contains(rec.Body.String(), "storekeeper_ws_watchers") {
			t.Errorf("/metrics with the token (%s): %d %s", hdr[1][:5], rec.Code, rec.Body)
		}
	}
	// The rest of the API is not affected.
	if rec := scrape(t, h); rec.Code != 401 {
		t.Fatal("no token: not 401")
	}
	req := httptest.NewRequest("GET", "/healthz", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("/healthz with a metrics token set: %d", rec.Code)
	}
	if _, err := New(Config{Redis: rdb, Tokens: tokens, MetricsToken: "short"}); err == nil {
		t.Error("a 5-character metrics token was accepted")
	}
	// Without one, /metrics is open, as before.
	open, err := New(Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(open.Close)
	if rec := scrape(t, open.Handler()); rec.Code != 200 {
		t.Errorf("/metrics without a metrics token: %d", rec.Code)
	}
}

// MetricsHandler, for a worker-only process's /metrics: the same rule.
func TestMetricsHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"}))
	h, err := MetricsHandler(reg, metricsToken)
	if err != nil {
		t.Fatal(err)
	}
	if rec := scrape(t, h); rec.Code != 401 || !strings.Contains(rec.Body.String(), `"unauthorized"`) {
		t.Errorf("no token: %d %s", rec.Code, rec.Body)
	}
	if rec := scrape(t, h, "Authorization", "Bearer "+metricsToken); rec.Code != 200 || !strings.Contains(rec.Body.String(), "g 0") {
		t.Errorf("with the token: %d %s", rec.Code, rec.Body)
	}
	if h, err = MetricsHandler(reg, ""); err != nil || scrape(t, h).Code != 200 {
		t.Errorf("no token set: %v", err)
	}
	if _, err := MetricsHandler(reg, "0123456789abcde"); err == nil {
		t.Error("a 15-character token was accepted")
	}
}

func basic(user, pass string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}
