package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobmetrics"
	"storekeeper/jobs"
)

// metricsResult is one /metrics collection over n stores, with the
// per-store series on and off, beside the raw read of every store's
// published status it needs.
type metricsResult struct {
	on, off, raw       time.Duration
	seriesOn, seriesOf int
}

// measureMetrics publishes a status for each of n stores (three backups,
// one backup target, a drill: what a store with off-site backups
// publishes), then gathers the cluster collector with per-store series
// and without.
func measureMetrics(n int) (metricsResult, error) {
	var r metricsResult
	ctx := context.Background()
	err := withRedis(func(rdb *redis.Client) error {
		now := time.Now().UTC()
		lag := 300 * time.Millisecond
		names := make([]string, n)
		for start := 0; start < n; start += 1000 {
			pipe := rdb.Pipeline()
			for i := start; i < min(start+1000, n); i++ {
				name, node := fmt.Sprintf("s%06d", i), fmt.Sprintf("node%03d", i%1000)
				names[i] = name
				st := jobs.StoreStatus{Node: node, At: now, Stats: jobs.StoreStats{State: jobs.StoreOpen, DiskBytes: 1 << 20},
					Targets: []jobs.TargetStatus{{Target: "vault", BackupID: "b3", BackupAt: now.Add(-time.Hour), ShipLag: &lag}},
					Drill:   &jobs.DrillStatus{JobID: jobs.NewID(), At: now, Target: "vault", OK: true, RTO: 20 * time.Second, Restorable: now.Add(-time.Hour)}}
				for b := range 3 {
					st.Backups = append(st.Backups, jobs.BackupSummary{ID: fmt.Sprintf("b%d", 3-b), Store: name, CreatedAt: now.Add(-time.Duration(b+1) * time.Hour), Keys: 1000, Bytes: 1 << 20})
				}
				raw, err := json.Marshal(st)
				if err != nil {
					return err
				}
				pipe.HSet(ctx, keyspace.StoresKey, name, node)
				pipe.Set(ctx, keyspace.StatsKey(name), raw, 0)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		gather := func(max int) (time.Duration, int, error) {
			c, err := jobmetrics.New(jobmetrics.Config{Redis: rdb, MaxAge: -1, StoreSeries: max, Timeout: time.Minute})
			if err != nil {
				return 0, 0, err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			t0 := time.Now()
			fams, err := reg.Gather()
			took := time.Since(t0)
			series := 0
			for _, f := range fams {
				series += len(f.GetMetric())
			}
			return took, series, err
		}
		var err error
		if r.on, r.seriesOn, err = gather(n); err != nil {
			return err
		}
		if r.off, r.seriesOf, err = gather(-1); err != nil {
			return err
		}
		keys := make([]string, n)
		for i, name := range names {
			keys[i] = keyspace.StatsKey(name)
		}
		t0 := time.Now()
		pipe := rdb.Pipeline()
		for start := 0; start < n; start += 1000 {
			pipe.MGet(ctx, keys[start:min(start+1000, n)]...)
		}
		_, err = pipe.Exec(ctx)
		r.raw = time.Since(t0)
		return err
	})
	return r, err
}
