package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"storekeeper/jobs"
)

// metrics are the API's collectors. Job outcomes, durations and bytes
// reclaimed come from the history stream and store sizes and backup ages
// from what the owners publish, read at scrape time, so every API process
// reports the whole cluster and nothing is counted twice.
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
	for _, c := range []prometheus.Collector{m.requests, m.enqueues, m.wsWatchers, m.wsDropped,
		asynqmetrics.NewQueueMetricsCollector(s.insp), &clusterCollector{s: s}} {
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

// clusterCollector reads the cluster's state at scrape time.
type clusterCollector struct{ s *Server }

var (
	descJobs = prometheus.NewDesc("storekeeper_jobs_finished", "The newest 500 finished jobs in the history stream, by kind and status.",
		[]string{"kind", "status"}, nil)
	descDuration = prometheus.NewDesc("storekeeper_job_duration_seconds", "Duration of the finished jobs in the history stream.",
		[]string{"kind"}, nil)
	descReclaimed = prometheus.NewDesc("storekeeper_compaction_reclaimed_bytes", "Bytes reclaimed by the compactions in the history stream, per store.",
		[]string{"store"}, nil)
	descStoreBytes = prometheus.NewDesc("storekeeper_store_disk_bytes", "Disk bytes of each store, as its owner last published.",
		[]string{"store", "node"}, nil)
	descBackupAge = prometheus.NewDesc("storekeeper_backup_age_seconds", "Age of each store's newest good backup.",
		[]string{"store"}, nil)
	descStoreUp = prometheus.NewDesc("storekeeper_store_healthy", "1 when the store is open on a live node, else 0.",
		[]string{"store", "node"}, nil)
)

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descDuration, descReclaimed, descStoreBytes, descBackupAge, descStoreUp} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The newest 500 finished jobs: bounded work per scrape.
	hist, _, err := jobs.History(ctx, c.s.rdb, jobs.HistoryQuery{Limit: 500})
	if err == nil {
		type key struct{ kind, status string }
		counts := map[key]int{}
		durations := map[string][]float64{}
		reclaimed := map[string]float64{}
		for _, h := range hist {
			counts[key{string(h.Kind), string(h.Status)}]++
			durations[string(h.Kind)] = append(durations[string(h.Kind)], float64(h.DurationMS)/1000)
			if h.Status == jobs.StatusCompacted && h.BytesBefore > h.BytesAfter {
				reclaimed[h.Store] += float64(h.BytesBefore - h.BytesAfter)
			}
		}
		for k, n := range counts {
			ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), k.kind, k.status)
		}
		buckets := prometheus.ExponentialBuckets(0.01, 4, 10)
		for kind, ds := range durations {
			counts := map[float64]uint64{}
			sum := 0.0
			for _, d := range ds {
				sum += d
				for _, b := range buckets {
					if d <= b {
						counts[b]++
					}
				}
			}
			ch <- prometheus.MustNewConstHistogram(descDuration, uint64(len(ds)), sum, counts, kind)
		}
		for st, b := range reclaimed {
			ch <- prometheus.MustNewConstMetric(descReclaimed, prometheus.GaugeValue, b, st)
		}
	}
	stores, err := c.s.stores(ctx, "")
	if err != nil {
		return
	}
	for _, v := range stores {
		var st struct {
			State     string `json:"state"`
			DiskBytes uint64 `json:"disk_bytes"`
		}
		_ = json.Unmarshal(v.Stats, &st)
		ch <- prometheus.MustNewConstMetric(descStoreBytes, prometheus.GaugeValue, float64(st.DiskBytes), v.Name, v.Node)
		healthy := 0.0
		if v.NodeUp && st.State == "open" {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(descStoreUp, prometheus.GaugeValue, healthy, v.Name, v.Node)
		if v.LastBackup != nil {
			ch <- prometheus.MustNewConstMetric(descBackupAge, prometheus.GaugeValue, time.Since(*v.LastBackup).Seconds(), v.Name)
		}
	}
}
