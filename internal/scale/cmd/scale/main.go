// Command scale measures, with -bulk, the bulk enqueue over N stores
// beside raw asynq (bulk.go); with -metrics, one /metrics collection over
// N stores (metrics.go); and what idle worker nodes cost one Redis: N
// real worker.Worker instances (asynq servers polling their queues, heartbeats,
// node checks, schedules, the reconciler; stores: none) in this process
// against a private redis-server, for each --task-check-interval. It
// prints, per configuration, Redis's CPU (used_cpu_user+sys over the
// window, as a share of one core), commands per second, memory, this
// process's own CPU (when it nears the machine's cores, the load it
// offers is capped by the machine, not by the configuration), and the
// enqueue-to-start latency that interval gives a task (a probe asynq
// server with the same interval beside them).
//
//	go run ./internal/scale/cmd/scale -nodes 10,100,1000 -intervals 20ms,100ms,250ms,1s
//
// It is a measuring tool (make scale), not part of the storekeeper binary
// or of make test.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/store"
	"storekeeper/worker"
)

func main() {
	if spec := os.Getenv(apiNodeEnv); spec != "" { // the API node of a -stores run (apireads.go)
		if err := apiNode(spec); err != nil {
			fail(fmt.Errorf("API node: %w", err))
		}
		return
	}
	nodes := flag.String("nodes", "10,100,1000", "node counts, comma-separated")
	intervals := flag.String("intervals", "20ms,100ms,250ms,1s", "--task-check-interval values, comma-separated")
	window := flag.Duration("window", 20*time.Second, "how long each configuration is measured, after a warm-up of a quarter of it")
	probes := flag.Int("probes", 100, "tasks the latency probe enqueues, one every 50 ms")
	pool := flag.Int("pool", 4096, "the nodes' shared Redis connection pool (each node's subscriptions hold connections of their own)")
	bulk := flag.String("bulk", "", "store counts for the bulk enqueue (POST /api/admin/{kind}), comma-separated; empty: none")
	stores := flag.Int("stores", 0, "fake stores per node (internal/scale/fakestores); 0: idle nodes with no store")
	jobTime := flag.Duration("job-time", 100*time.Millisecond, "with -stores: each fake job's simulated time")
	schedule := flag.String("schedule", "", "with -stores: a cron spec for verify on every store, spread over -spread (lateness is measured against each store's spread time)")
	spread := flag.Duration("spread", 15*time.Minute, "with -stores and -schedule: --schedule-spread")
	steadyOnly := flag.Bool("steady-only", false, "with -stores: only the steady state (no bulk verify, no fan-out)")
	watchers := flag.Int("watchers", 0, "with -stores: WebSocket watchers of an in-process API that 50 compactions' events fan out to; 0: none")
	apiEvery := flag.Duration("api-every", 50*time.Millisecond, "with -stores: during the steady state an API node (a process of its own) reads the store list, one store, history and the dashboard in turn, one read every this; 0: no API node")
	metrics := flag.String("metrics", "", "store counts for one /metrics collection with and without per-store series, comma-separated; empty: none")
	flag.Parse()
	section(*bulk, "bulk", "the bulk enqueue",
		"| stores | bulk enqueue | raw asynq, 8 at a time | ratio | Redis's longest command | Redis memory per queued job | jobs in the answer |",
		func(n int) (string, error) {
			r, err := measureBulk(n)
			return fmt.Sprintf("| %d | %s | %s | %.2f× | %s | %.0f B | %d of %d |", n, r.wall.Round(time.Millisecond), r.raw.Round(time.Millisecond),
				r.wall.Seconds()/r.raw.Seconds(), r.longest, r.bytesPerJob, r.listed, r.total), err
		})
	section(*metrics, "metrics", "one /metrics collection of the whole cluster",
		"| stores | per-store series on | series | off (aggregates only) | series | raw read of every status alone |",
		func(n int) (string, error) {
			r, err := measureMetrics(n)
			return fmt.Sprintf("| %d | %s | %d | %s | %d | %s |", n, r.on.Round(time.Millisecond), r.seriesOn, r.off.Round(time.Millisecond),
				r.seriesOf, r.raw.Round(time.Millisecond)), err
		})
	if *nodes == "" {
		return
	}
	ns, err := parseInts(*nodes)
	if err != nil {
		fail(err)
	}
	if *stores > 0 {
		runStores(ns, storesConfig{stores: *stores, window: *window, jobTime: *jobTime, schedule: *schedule, spread: *spread, pool: *pool, watchers: *watchers, steadyOnly: *steadyOnly, apiEvery: *apiEvery}, *intervals)
		return
	}
	var ivs []time.Duration
	for _, s := range strings.Split(*intervals, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			fail(fmt.Errorf("-intervals: %q", s))
		}
		ivs = append(ivs, d)
	}
	fmt.Printf("scale: idle worker nodes against one redis-server, %d CPUs, GOMAXPROCS %d, window %s\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), *window)
	fmt.Println("| nodes | task check interval | Redis CPU (one core) | Redis commands/s | Redis memory | this process's CPU | enqueue→start p50 | p99 |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, n := range ns {
		for _, iv := range ivs {
			r, err := measure(n, iv, *window, *probes, *pool)
			if err != nil {
				fail(fmt.Errorf("%d nodes, %s: %w", n, iv, err))
			}
			fmt.Printf("| %d | %s | %.0f%% | %.0f | %.1f MiB | %.0f%% | %s | %s |\n", n, iv, 100*r.redisCPU, r.cmdsPerSec, float64(r.memory)/(1<<20),
				100*r.selfCPU, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond))
		}
	}
}

type result struct {
	redisCPU, cmdsPerSec, selfCPU float64
	memory                        int64
	p50, p99                      time.Duration
}

func measure(n int, interval, window time.Duration, probes, pool int) (result, error) {
	var r result
	dir, err := os.MkdirTemp("", "storekeeper-scale-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	srv, addr, err := startRedis(dir)
	if err != nil {
		return r, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: pool})
	defer rdb.Close()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)

	stop, err := startNodes(ctx, n, 32, func(i int) (worker.Config, error) {
		node := fmt.Sprintf("node%04d", i)
		reg, err := store.Open(store.Config{DataDir: filepath.Join(dir, node, "data"), BackupDir: filepath.Join(dir, node, "backups"), Logger: quiet})
		return worker.Config{Redis: rdb, Registry: reg, Node: node, Logger: quiet, TaskCheckInterval: interval, ShutdownTimeout: time.Second}, err
	})
	defer stop()
	if err != nil {
		return r, err
	}

	time.Sleep(window / 4) // warm-up: every node past its start
	cpu0, cmds0, err := redisCounters(ctx, rdb)
	if err != nil {
		return r, err
	}
	self0 := selfCPU()
	t0 := time.Now()
	lat := probe(ctx, addr, interval, probes, window)
	if rest := window - time.Since(t0); rest > 0 {
		time.Sleep(rest)
	}
	elapsed := time.Since(t0).Seconds()
	cpu1, cmds1, err := redisCounters(ctx, rdb)
	if err != nil {
		return r, err
	}
	r.selfCPU = (selfCPU() - self0).Seconds() / elapsed
	r.redisCPU = (cpu1 - cpu0) / elapsed
	r.cmdsPerSec = float64(cmds1-cmds0) / elapsed
	if info, err := rdb.Info(ctx, "memory").Result(); err == nil {
		r.memory, _ = strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
	}
	r.p50, r.p99 = quantile(lat, 50), quantile(lat, 99)
	return r, nil
}

// probe runs an asynq server polling a queue of its own every interval
// and enqueues tasks to it one every 50 ms; it returns each task's time
// from enqueue to its handler's start.
func probe(ctx context.Context, addr string, interval time.Duration, n int, limit time.Duration) []time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	done := make(chan struct{}, n)
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: addr}, asynq.Config{Concurrency: 4, Queues: map[string]int{"scale-probe": 1},
		TaskCheckInterval: interval, LogLevel: asynq.FatalLevel})
	handler := asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
		at, _ := strconv.ParseInt(string(t.Payload()), 10, 64)
		mu.Lock()
		lat = append(lat, time.Since(time.Unix(0, at)))
		mu.Unlock()
		done <- struct{}{}
		return nil
	})
	if err := srv.Start(handler); err != nil {
		return nil
	}
	defer srv.Shutdown()
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: addr})
	defer client.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for ; sent < n; sent++ {
		<-tick.C
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("probe", []byte(strconv.FormatInt(time.Now().UnixNano(), 10))), asynq.Queue("scale-probe")); err != nil {
			break
		}
	}
	deadline := time.After(limit)
	for got := 0; got < sent; got++ {
		select {
		case <-done:
		case <-deadline:
			got = sent
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}

// redisCounters reads Redis's CPU seconds (user+sys) and commands
// processed.
func redisCounters(ctx context.Context, rdb *redis.Client) (float64, int64, error) {
	info, err := rdb.Info(ctx, "cpu", "stats").Result()
	if err != nil {
		return 0, 0, err
	}
	user, _ := strconv.ParseFloat(infoField(info, "used_cpu_user"), 64)
	sys, _ := strconv.ParseFloat(infoField(info, "used_cpu_sys"), 64)
	cmds, _ := strconv.ParseInt(infoField(info, "total_commands_processed"), 10, 64)
	return user + sys, cmds, nil
}

func infoField(info, name string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startRedis starts a private redis-server on a free loopback port, no
// persistence.
func startRedis(dir string) (*exec.Cmd, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--maxclients", "20000")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("redis-server: %w", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for range 100 {
		if c.Ping(context.Background()).Err() == nil {
			return cmd, addr, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, "", errors.New("redis-server did not answer")
}

// runStores measures synthetic nodes with stores at each node count and
// interval (measureStores), one table row each.
func runStores(ns []int, base storesConfig, intervals string) {
	fmt.Printf("scale: worker nodes of %d fake stores (jobs take %s) against one redis-server, %d CPUs, GOMAXPROCS %d, window %s, verify schedule %q spread %s, %d watchers\n\n",
		base.stores, base.jobTime, runtime.NumCPU(), runtime.GOMAXPROCS(0), base.window, base.schedule, base.spread, base.watchers)
	fmt.Println("| nodes × stores | task check interval | Redis CPU | Redis commands/s | Redis memory | per store | this process's CPU | heartbeat p50 / p99 (100 stores) | scheduled: jobs, lateness p50 / p99 / max | bulk verify: enqueue, all ended | enqueue→start p50 / p99 | failed, not ended | per history entry | fan-out: events, p50 / p99 / max |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	type reads struct {
		label string
		r     *apiReadsResult
	}
	var api []reads
	for _, n := range ns {
		for _, s := range strings.Split(intervals, ",") {
			iv, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil || iv <= 0 {
				fail(fmt.Errorf("-intervals: %q", s))
			}
			cfg := base
			cfg.nodes, cfg.interval = n, iv
			r, err := measureStores(cfg)
			if err != nil {
				fail(fmt.Errorf("%d nodes × %d stores, %s: %w", n, cfg.stores, iv, err))
			}
			ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
			fmt.Printf("| %d × %d | %s | %.0f%% | %.0f | %.1f MiB | %s | %.0f%% | %s / %s | %d, %s / %s / %s | %s, %s | %s / %s | %d, %d of %d | %s | %d, %s / %s / %s |\n",
				n, cfg.stores, iv, 100*r.redisCPU, r.cmdsPerSec, float64(r.memory)/(1<<20), fmtBytes(r.perStore), 100*r.selfCPU,
				ms(r.beatP50), ms(r.beatP99), r.scheduled, ms(r.lateP50), ms(r.lateP99), ms(r.lateMax), ms(r.bulk), ms(r.bulkAllDone),
				ms(r.startP50), ms(r.startP99), r.bulkFailed, r.bulkStuck, r.bulkJobs, fmtBytes(r.perHistory), r.fanEvents, ms(r.fanP50), ms(r.fanP99), ms(r.fanMax))
			if r.api != nil {
				api = append(api, reads{fmt.Sprintf("the steady state of %d × %d, %s", n, cfg.stores, iv), r.api})
			}
		}
	}
	for _, a := range api {
		apiReadsTable(a.label, *a.r)
	}
}

// section prints a table with header and one row per store count in
// counts (the -name flag; empty: no table).
func section(counts, name, what, header string, row func(n int) (string, error)) {
	if counts == "" {
		return
	}
	ns, err := parseInts(counts)
	if err != nil {
		fail(fmt.Errorf("-%s: %w", name, err))
	}
	fmt.Printf("scale: %s against one redis-server, %d CPUs\n\n%s\n", what, runtime.NumCPU(), header)
	fmt.Println(strings.Repeat("|---", strings.Count(header, "|")-1) + "|")
	for _, n := range ns {
		line, err := row(n)
		if err != nil {
			fail(fmt.Errorf("%s %d: %w", name, n, err))
		}
		fmt.Println(line)
	}
	fmt.Println()
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "scale:", err)
	os.Exit(1)
}
