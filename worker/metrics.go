package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"storekeeper/jobs"
)

// counters are what this worker process counts of the jobs it runs:
// Prometheus counters, exact and restart-safe under increase(), where
// jobmetrics reports a window of the cluster's history stream.
type counters struct {
	finished       *prometheus.CounterVec // kind, status
	attemptsFailed *prometheus.CounterVec // kind
}

func newCounters(reg prometheus.Registerer) (*counters, error) {
	c := &counters{
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_worker_jobs_finished_total",
			Help: "Jobs this worker process ran to their end, or settled as failed after asynq ended them without a worker, by kind and history status (failed: out of retries, not retryable, or settled)."},
			[]string{"kind", "status"}),
		attemptsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "storekeeper_worker_job_attempts_failed_total",
			Help: "Attempts that failed in this worker process, by kind, the last one of a failed job included."},
			[]string{"kind"}),
	}
	// Failures start at 0, so that increase() sees the first one.
	for _, k := range jobs.Kinds {
		c.finished.WithLabelValues(string(k), string(jobs.StatusFailed))
		c.attemptsFailed.WithLabelValues(string(k))
	}
	c.finished.WithLabelValues(string(jobs.KindVerify), string(jobs.StatusCorrupt))
	if reg != nil {
		for _, col := range []prometheus.Collector{c.finished, c.attemptsFailed} {
			if err := reg.Register(col); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

func (c *counters) succeeded(kind jobs.Kind, status jobs.HistoryStatus) {
	c.finished.WithLabelValues(string(kind), string(status)).Inc()
}

func (c *counters) attemptFailed(kind jobs.Kind, final bool) {
	c.attemptsFailed.WithLabelValues(string(kind)).Inc()
	if final {
		c.finished.WithLabelValues(string(kind), string(jobs.StatusFailed)).Inc()
	}
}

// settledFailed counts a job reconcile recorded as failed: asynq ended it
// without a worker (archived, or gone).
func (c *counters) settledFailed(kind jobs.Kind) {
	c.finished.WithLabelValues(string(kind), string(jobs.StatusFailed)).Inc()
}
