package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

// The worker counts every failed attempt and every job it ran to its end,
// by kind and status, in the registry it was given; failures read 0 from
// the start, so that increase() sees the first one.
func TestCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	var calls atomic.Int32
	b := setupWith(t, options{worker: func(c *Config) { c.Metrics = reg }}, func(w *Worker) {
		w.handlers[jobs.KindCompact] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			if calls.Add(1) <= 2 {
				return outcome{}, errors.New("transient trouble")
			}
			return outcome{Status: jobs.StatusSkipped}, nil
		}
	}, "orders")
	// series is every sample the registry exposes, as "name{labels} value".
	series := func() []string {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range families {
			for _, m := range f.GetMetric() {
				labels := ""
				for _, l := range m.GetLabel() {
					labels += fmt.Sprintf("%s=%q,", l.GetName(), l.GetValue())
				}
				out = append(out, fmt.Sprintf("%s{%s} %g", f.GetName(), labels, counterValue(m)))
			}
		}
		return out
	}
	before := series()
	for _, want := range []string{
		`storekeeper_worker_jobs_finished_total{kind="restore",status="failed",} 0`,
		`storekeeper_worker_job_attempts_failed_total{kind="compact",} 0`,
	} {
		if !slices.Contains(before, want) {
			t.Errorf("before any job: no %s in %v", want, before)
		}
	}

	compact := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{})
	b.waitState(t, compact.ID, jobs.StateSucceeded)
	restore := b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{}) // no backup: fails for good at once
	b.waitState(t, restore.ID, jobs.StateFailed)

	want := []string{
		`storekeeper_worker_jobs_finished_total{kind="compact",status="skipped",} 1`,
		`storekeeper_worker_jobs_finished_total{kind="compact",status="failed",} 0`,
		`storekeeper_worker_job_attempts_failed_total{kind="compact",} 2`,
		`storekeeper_worker_jobs_finished_total{kind="restore",status="failed",} 1`,
		`storekeeper_worker_job_attempts_failed_total{kind="restore",} 1`,
	}
	// The counters move just after the records are written.
	var got, missing []string
	if !testsignal.Poll(5*time.Second, func() bool {
		got = series()
		missing = slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(got, w) })
		return len(missing) == 0
	}) {
		t.Fatalf("no %v in\n%v", missing, got)
	}
}

func counterValue(m *dto.Metric) float64 { return m.GetCounter().GetValue() }

// count is a counter's value.
func count(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return counterValue(&m)
}
