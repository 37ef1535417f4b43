package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"

	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"storekeeper/jobmetrics"
	"storekeeper/jobs"
)

// metrics are the API's collectors. Job outcomes, durations and bytes
// reclaimed, store sizes and backup ages are jobmetrics' for the whole
// cluster, read from Redis at scrape time, so every API process reports
// the same and nothing is counted twice within one. Those and asynq's
// queue metrics are served from one snapshot (jobmetrics.Snapshot) read
// at most once per jobmetrics.DefaultMaxAge: scraping /metrics faster
// costs Redis nothing more. The API's own counters are always current.
type metrics struct {
	reg        *prometheus.Registry
	token      string // Config.MetricsToken
	requests   *prometheus.CounterVec
	enqueues   *prometheus.CounterVec
	wsWatchers prometheus.Gauge
	wsDropped  prometheus.Counter
	wsRefused  *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, s *Server) (*metrics, error) {
	if err := checkMetricsToken(s.cfg.MetricsToken); err != nil {
		return nil, err
	}
	m := &metrics{
		reg:   reg,
		token: s.cfg.MetricsToken,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_api_requests_total",
			Help: "API requests by route, method and status."}, []string{"route", "method", "status"}),
		enqueues: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_api_enqueues_total",
			Help: "Jobs asked for through the API, by kind; deduplicated ones apart."}, []string{"kind", "deduplicated"}),
		wsWatchers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "storekeeper_ws_watchers",
			Help: "WebSocket watchers connected to this process."}),
		wsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "storekeeper_ws_dropped_total",
			Help: "Events a slow watcher lost (it was told with stream.dropped)."}),
		wsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_ws_refused_total",
			Help: "WebSocket watchers refused by this process's limits, by reason (too_many_watchers: the token holds as many as it may; too_many_filters)."}, []string{"reason"}),
	}
	cluster, err := jobmetrics.New(jobmetrics.Config{Redis: s.rdb, MaxAge: -1, RPO: s.cfg.RPO, RTO: s.cfg.RTO, StoreSeries: s.cfg.MetricsStoreSeries}) // in the snapshot below
	if err != nil {
		return nil, err
	}
	snapshot := jobmetrics.NewSnapshot(jobmetrics.DefaultMaxAge, asynqmetrics.NewQueueMetricsCollector(s.insp), cluster).WithClock(s.cfg.Clock.Now)
	for _, c := range []prometheus.Collector{m.requests, m.enqueues, m.wsWatchers, m.wsDropped, m.wsRefused, snapshot} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) handler() http.Handler {
	h, _ := MetricsHandler(m.reg, m.token) // the token was checked by newMetrics
	return h
}

func (m *metrics) request(route, method string, status int) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
}

func (m *metrics) enqueued(kind jobs.Kind, dedup bool) { m.enqueuedN(kind, dedup, 1) }

func (m *metrics) enqueuedN(kind jobs.Kind, dedup bool, n int) {
	m.enqueues.WithLabelValues(string(kind), strconv.FormatBool(dedup)).Add(float64(n))
}

// MetricsHandler serves g's metrics in Prometheus' format. With a token
// (at least 16 characters), it serves only requests that carry it, as
// "Authorization: Bearer <token>" (or as the password of Basic
// authentication, any user name); others get 401 and the API's JSON error
// {"error":"unauthorized",…}. Empty: it serves everyone. The API serves
// its /metrics with it (Config.MetricsToken); a worker-only process
// should too.
func MetricsHandler(g prometheus.Gatherer, token string) (http.Handler, error) {
	if err := checkMetricsToken(token); err != nil {
		return nil, err
	}
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	if token == "" {
		return h, nil
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(tokenFrom(r, false))) // equal lengths: the comparison leaks nothing
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="storekeeper metrics"`)
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"unauthorized","message":"/metrics requires the metrics token (Authorization: Bearer <token>)"}`))
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}

func checkMetricsToken(token string) error {
	if token != "" && len(token) < 16 {
		return &ConfigError{Field: "MetricsToken", Err: errors.New("the metrics token needs at least 16 characters")}
	}
	return nil
}
