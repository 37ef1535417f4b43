package api

import (
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
// the same and nothing is counted twice within one.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	enqueues   *prometheus.CounterVec
	wsWatchers prometheus.Gauge
	wsDropped  prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) (*metrics, error) {
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_api_requests_total",
			Help: "API requests by route, method and status."}, []string{"route", "method", "status"}),
		enqueues: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_api_enqueues_total",
			Help: "Jobs asked for through the API, by kind; deduplicated ones apart."}, []string{"kind", "deduplicated"}),
		wsWatchers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "storekeeper_ws_watchers",
			Help: "WebSocket watchers connected to this process."}),
		wsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "storekeeper_ws_dropped_total",
			Help: "Events a slow watcher lost (it was told with stream.dropped)."}),
	}
	cluster, err := jobmetrics.New(jobmetrics.Config{Redis: s.rdb})
	if err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{m.requests, m.enqueues, m.wsWatchers, m.wsDropped,
		asynqmetrics.NewQueueMetricsCollector(s.insp), cluster} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

func (m *metrics) request(route, method string, status int) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
}

func (m *metrics) enqueued(kind jobs.Kind, dedup bool) {
	m.enqueues.WithLabelValues(string(kind), strconv.FormatBool(dedup)).Inc()
}
