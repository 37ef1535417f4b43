package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/scale/fakestores"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/worker"
)

// storesConfig is a run of synthetic nodes with stores.
type storesConfig struct {
	nodes, stores int           // nodes, and stores per node
	interval      time.Duration // --task-check-interval
	window        time.Duration // the steady state measured
	jobTime       time.Duration // each fake job's simulated time
	schedule      string        // a cron spec for verify on every store ("" : none), spread over spread
	spread        time.Duration
	pool          int
	watchers      int // WebSocket watchers of the fan-out measure; 0: none
	steadyOnly    bool
	apiEvery      time.Duration // the API node's reads, one every apiEvery during the steady state; 0: no API node
}

// storesResult is what one run measured.
type storesResult struct {
	redisCPU, cmdsPerSec, selfCPU   float64
	memory                          int64
	perStore, perHistory            float64 // bytes
	beatP50, beatP99                time.Duration
	scheduled                       int
	lateP50, lateP99, lateMax       time.Duration
	bulk, bulkAllDone               time.Duration
	startP50, startP99              time.Duration // enqueue → start, the bulk's jobs
	bulkJobs, bulkFailed, bulkStuck int
	fanP50, fanP99, fanMax          time.Duration
	fanEvents                       int
	api                             *apiReadsResult // nil: no API node
}

// measureStores starts cfg.nodes real workers, each owning cfg.stores
// fake stores (fakestores: jobs take cfg.jobTime), with verify scheduled
// on every store when cfg.schedule is set. After the nodes have claimed
// their stores, it measures the steady state over cfg.window: Redis's
// CPU, commands and memory, the memory of one store's keys, and a
// heartbeat probe (the heartbeat pipeline of a 100-store node, once a
// second). Then a bulk verify over every store: the enqueue, each job's
// enqueue → start, and the time until all have ended. Scheduled jobs'
// lateness is measured against each store's own spread time
// (worker.SpreadAt).
func measureStores(cfg storesConfig) (storesResult, error) {
	var r storesResult
	var sched cron.Schedule
	if cfg.schedule != "" {
		var err error
		if sched, err = cron.ParseStandard(cfg.schedule); err != nil {
			return r, fmt.Errorf("-schedule: %w", err)
		}
	}
	ctx := context.Background()
	err := withRedisPool(cfg.pool, func(rdb *redis.Client) error {
		quiet := slog.New(slog.DiscardHandler)
		schedules := map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off", jobs.KindDrill: "off"}
		if cfg.schedule != "" {
			schedules[jobs.KindVerify] = cfg.schedule
		}
		stop, err := startNodes(ctx, cfg.nodes, 16, func(i int) (worker.Config, error) {
			names := make([]string, cfg.stores)
			for j := range names {
				names[j] = fmt.Sprintf("n%04d-s%03d", i, j)
			}
			return worker.Config{Redis: rdb, Stores: fakestores.New(names, cfg.jobTime), Node: fmt.Sprintf("node%04d", i), Logger: quiet,
				TaskCheckInterval: cfg.interval, ShutdownTimeout: time.Second, Schedules: schedules, ScheduleSpread: cfg.spread}, nil
		})
		defer stop()
		if err != nil {
			return err
		}
		total := cfg.nodes * cfg.stores
		progress("%d nodes started; waiting for their %d stores to be claimed and published", cfg.nodes, total)
		if err := waitClaimed(ctx, rdb, total); err != nil {
			return err
		}
		progress("claimed; measuring the steady state for %s", cfg.window)

		// The steady state, and the heartbeat probe beside it.
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			return err
		}
		started := time.Now()
		cpu0, cmds0, err := redisCounters(ctx, rdb)
		if err != nil {
			return err
		}
		self0 := selfCPU()
		var apiWait func() (apiReadsResult, error)
		if cfg.apiEvery > 0 {
			if apiWait, err = startAPIReads(ctx, rdb, apiNodeArgs{Nodes: cfg.nodes, Stores: cfg.stores, Window: cfg.window, Every: cfg.apiEvery}); err != nil {
				return err
			}
		}
		beats := beatProbe(ctx, rdb, cfg.window)
		elapsed := time.Since(started).Seconds()
		cpu1, cmds1, err := redisCounters(ctx, rdb)
		if err != nil {
			return err
		}
		r.selfCPU = (selfCPU() - self0).Seconds() / elapsed
		r.redisCPU = (cpu1 - cpu0) / elapsed
		r.cmdsPerSec = float64(cmds1-cmds0) / elapsed
		r.memory, _ = usedMemory(ctx, rdb)
		r.beatP50, r.beatP99 = quantile(beats, 50), quantile(beats, 99)
		if apiWait != nil {
			reads, err := apiWait()
			if err != nil {
				return err
			}
			r.api = &reads
		}
		if err := topCommands(ctx, rdb, elapsed); err != nil {
			return err
		}
		if r.perStore, err = storeBytes(ctx, rdb, total); err != nil {
			return err
		}
		if sched != nil {
			r.scheduled, r.lateP50, r.lateP99, r.lateMax, err = lateness(ctx, rdb, sched, cfg.spread, started)
			if err != nil {
				return err
			}
		}

		if cfg.steadyOnly {
			return nil
		}
		// The bulk verify.
		progress("bulk verify over %d stores", total)
		c := jobsdb.NewClient(rdb, jobs.ClientConfig{})
		t0 := time.Now()
		b, err := c.EnqueueBatch(ctx, jobs.BatchRequest{Kind: jobs.KindVerify, Params: jobs.Params{Deep: true}, Trigger: jobs.TriggerManual, Actor: "scale", List: 1})
		r.bulk = time.Since(t0)
		if err != nil {
			return err
		}
		var recs []jobs.Record
		deadline := time.Now().Add(10*time.Minute + time.Duration(total/cfg.nodes)*cfg.jobTime)
		for {
			if recs, err = allJobs(ctx, c, b.ID); err != nil {
				return err
			}
			ended := 0
			for _, rec := range recs {
				if rec.State.Terminal() {
					ended++
				}
			}
			progress("%d of %d ended", ended, len(recs))
			if ended == len(recs) || time.Now().After(deadline) {
				r.bulkStuck = len(recs) - ended
				break
			}
			time.Sleep(time.Second)
		}
		r.bulkAllDone = time.Since(t0)
		var starts []time.Duration
		for _, rec := range recs {
			r.bulkJobs++
			if rec.State != jobs.StateSucceeded {
				r.bulkFailed++
			}
			if !rec.StartedAt.IsZero() {
				starts = append(starts, rec.StartedAt.Sub(rec.EnqueuedAt))
			}
		}
		r.startP50, r.startP99 = quantile(starts, 50), quantile(starts, 99)
		if r.perHistory, err = historyBytes(ctx, rdb); err != nil {
			return err
		}
		if cfg.watchers > 0 {
			names := make([]string, 0, 50)
			for i := range min(50, total) { // 50 stores of 50 nodes (or fewer)
				names = append(names, fmt.Sprintf("n%04d-s%03d", i%cfg.nodes, i/cfg.nodes))
			}
			progress("fan-out: %d watchers, %d compactions", cfg.watchers, len(names))
			lat, err := fanout(ctx, rdb, cfg.watchers, names)
			if err != nil {
				return err
			}
			r.fanEvents, r.fanP50, r.fanP99, r.fanMax = len(lat), quantile(lat, 50), quantile(lat, 99), slices.Max(lat)
		}
		return nil
	})
	return r, err
}

// waitClaimed waits until every store has a published status (its
// owner claimed its lease and published), then lets the claims' burst
// settle for a few seconds.
func waitClaimed(ctx context.Context, rdb *redis.Client, total int) error {
	names, err := rdb.HKeys(ctx, keyspace.StoresKey).Result()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		pipe := rdb.Pipeline()
		var counts []*redis.IntCmd
		for start := 0; start < len(names); start += 1000 {
			keys := make([]string, 0, 1000)
			for _, n := range names[start:min(start+1000, len(names))] {
				keys = append(keys, keyspace.StatsKey(n))
			}
			counts = append(counts, pipe.Exists(ctx, keys...))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		published := 0
		for _, c := range counts {
			published += int(c.Val())
		}
		if len(names) >= total && published >= total {
			time.Sleep(10 * time.Second)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d stores published after 10 minutes", published, total)
		}
		time.Sleep(time.Second)
		if len(names) < total {
			if names, err = rdb.HKeys(ctx, keyspace.StoresKey).Result(); err != nil {
				return err
			}
		}
	}
}

// beatProbe runs, once a second for window, the heartbeat pipeline of a
// node holding 100 stores (jobsdb.Heartbeat: renew every lease, publish
// every status) on stores of its own, and returns each one's time.
func beatProbe(ctx context.Context, rdb *redis.Client, window time.Duration) []time.Duration {
	const stores = 100
	beats := make([]jobsdb.Beat, stores)
	status := `{"node":"probe","stats":{"state":"open","disk_bytes":67108864},"backups":[]}`
	for i := range beats {
		name := fmt.Sprintf("probe-s%03d", i)
		lease := jobs.Lease{Node: "probe", Host: "probe", Instance: "probe"}
		v, _, err := jobsdb.ClaimLease(ctx, rdb, name, lease, time.Minute)
		if err != nil {
			return nil
		}
		beats[i] = jobsdb.Beat{Store: name, Lease: v, Status: status}
	}
	defer func() { // the probe's stores have no worker: out of the bulk verify
		for _, b := range beats {
			rdb.HDel(ctx, keyspace.StoresKey, b.Store)
			rdb.Del(ctx, keyspace.LeaseKey(b.Store), keyspace.LeaseTokenKey(b.Store), keyspace.HomeKey(b.Store), keyspace.StatsKey(b.Store))
		}
	}()
	var out []time.Duration
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.After(window)
	for {
		select {
		case <-end:
			return out
		case <-tick.C:
		}
		t0 := time.Now()
		if _, err := jobsdb.Heartbeat(ctx, rdb, beats, time.Minute); err == nil {
			out = append(out, time.Since(t0))
		}
	}
}

// storeBytes is the memory of one store's keys (owner entry, lease,
// fencing token counter, home, published status), from MEMORY USAGE over
// a sample of stores.
func storeBytes(ctx context.Context, rdb *redis.Client, total int) (float64, error) {
	names, err := rdb.HKeys(ctx, keyspace.StoresKey).Result()
	if err != nil || len(names) == 0 {
		return 0, err
	}
	hash, err := rdb.MemoryUsage(ctx, keyspace.StoresKey, 0).Result()
	if err != nil {
		return 0, err
	}
	sample := names[:min(200, len(names))]
	var sum int64
	for _, n := range sample {
		for _, k := range []string{keyspace.LeaseKey(n), keyspace.LeaseTokenKey(n), keyspace.HomeKey(n), keyspace.StatsKey(n)} {
			if b, err := rdb.MemoryUsage(ctx, k, 0).Result(); err == nil {
				sum += b
			}
		}
	}
	return float64(sum)/float64(len(sample)) + float64(hash)/float64(total), nil
}

// historyBytes is the history stream's memory per entry.
func historyBytes(ctx context.Context, rdb *redis.Client) (float64, error) {
	n, err := rdb.XLen(ctx, keyspace.HistoryStream).Result()
	if err != nil || n == 0 {
		return 0, err
	}
	b, err := rdb.MemoryUsage(ctx, keyspace.HistoryStream, 0).Result()
	return float64(b) / float64(n), err
}

// lateness reads the records of the verify jobs the schedules enqueued
// since since, and how late each was enqueued against its store's spread
// time in its slot.
func lateness(ctx context.Context, rdb *redis.Client, sched cron.Schedule, spread time.Duration, since time.Time) (int, time.Duration, time.Duration, time.Duration, error) {
	var late []time.Duration
	iter := rdb.Scan(ctx, 0, keyspace.RecordKey("*"), 1000).Iterator()
	for iter.Next(ctx) {
		h, err := rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return 0, 0, 0, 0, err
		}
		rec, err := jobs.RecordFromHash(h)
		if err != nil || rec.Trigger != jobs.TriggerScheduled || rec.Kind != jobs.KindVerify || rec.EnqueuedAt.Before(since) {
			continue
		}
		// The slot: the last cron time at or before its spread time, which
		// is at most a spread after the slot.
		slot := sched.Next(rec.EnqueuedAt.Add(-spread - time.Minute))
		for next := sched.Next(slot); !next.After(rec.EnqueuedAt); next = sched.Next(next) {
			slot = next
		}
		due := worker.SpreadAt(rec.Store, jobs.KindVerify, slot, sched.Next(slot), spread)
		late = append(late, rec.EnqueuedAt.Sub(due))
	}
	if err := iter.Err(); err != nil {
		return 0, 0, 0, 0, err
	}
	if len(late) == 0 {
		return 0, 0, 0, 0, nil
	}
	return len(late), quantile(late, 50), quantile(late, 99), slices.Max(late), nil
}

// allJobs reads every job of a batch, a thousand per page.
func allJobs(ctx context.Context, c *jobsdb.Client, batch string) ([]jobs.Record, error) {
	var all []jobs.Record
	cursor := ""
	for {
		page, next, err := c.JobsPage(ctx, batch, cursor, 1000)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}

func quantile(ds []time.Duration, q int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*q/100)]
}

func fmtBytes(b float64) string { return strconv.FormatFloat(b, 'f', 0, 64) + " B" }

// progress tells, on stderr, where a long run is.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// topCommands prints, as progress, the ten commands Redis spent most
// time on since the stats were reset (INFO commandstats), over elapsed
// seconds.
func topCommands(ctx context.Context, rdb *redis.Client, elapsed float64) error {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return err
	}
	type stat struct {
		name string
		redistest.CommandStat
	}
	var stats []stat
	for name, st := range redistest.ParseCommandStats(info) {
		stats = append(stats, stat{name, st})
	}
	slices.SortFunc(stats, func(a, b stat) int { return cmp.Compare(b.Usec, a.Usec) })
	for _, st := range stats[:min(10, len(stats))] {
		progress("  %-12s %8.0f calls/s %6.1f%% of a core %6.0f µs/call", st.name, st.Calls/elapsed, st.Usec/elapsed/1e4, st.Usec/max(st.Calls, 1))
	}
	return nil
}

// startNodes starts n workers, parallel at a time, with the config
// node(i) gives; stop shuts down those that started (also when err is
// not nil).
func startNodes(ctx context.Context, n, parallel int, node func(i int) (worker.Config, error)) (stop func(), err error) {
	var ws []*worker.Worker
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg, err := node(i)
			var w *worker.Worker
			if err == nil {
				w, err = worker.New(cfg)
			}
			if err == nil {
				err = w.Start(ctx)
			}
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			ws = append(ws, w)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	stop = func() {
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Go(w.Shutdown)
		}
		wg.Wait()
	}
	return stop, <-errs
}
