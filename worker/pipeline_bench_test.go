package worker

// Benchmarks of the job pipeline beside raw asynq with the same settings,
// on a private redis-server: `make bench` reports them in
// docs/BENCHMARKS.md. Each runs its sub-benchmarks back to back on one
// Redis, flushed in between: /storekeeper (enqueue client, worker,
// records, events, history) and /raw (asynq client and server, a
// handler that does nothing).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// Both sides poll like this: asynq's processor sleeps between ½ and 1½ of
// it after finding its queues empty.
const (
	benchCheckInterval = 20 * time.Millisecond
	benchConcurrency   = 4
)

// samples collects durations from several goroutines.
type samples struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *samples) add(d time.Duration) { s.mu.Lock(); s.d = append(s.d, d); s.mu.Unlock() }

// report adds the p50 and p99 of the samples as name-p50-ms, name-p99-ms.
func (s *samples) report(b *testing.B, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.d) == 0 {
		b.Fatalf("no %s samples", name)
	}
	slices.Sort(s.d)
	at := func(q float64) float64 {
		return float64(s.d[min(len(s.d)-1, int(q*float64(len(s.d))))]) / 1e6
	}
	b.ReportMetric(at(0.50), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}

// pipeline is a worker over empty stores with a live events tailer, as
// the API runs one.
type pipeline struct {
	rdb    *redis.Client
	rts    *redistest.RoundTrips
	client *jobsdb.Client
	w      *Worker
	reg    *store.Registry
	stores []string
	// events: how long from a state change (the event's At, taken just
	// before the step's write) until the tailer had read it.
	events samples
	ended  map[string]chan struct{} // store -> a job of it ended
	stop   func()
}

// startPipeline runs a worker on n empty stores. wrap, if set, wraps the
// verify handler. With watch, a tailer reads the events stream as the API
// does, measures how soon each event is readable, and reports a job's end
// when it reads it; without, the worker reports it directly. hooks are
// added to the worker's Redis client before it starts.
func startPipeline(b *testing.B, srv *redistest.Server, n int, watch bool, wrap func(handlerFunc) handlerFunc, hooks ...redis.Hook) *pipeline {
	b.Helper()
	srv.FlushAll(b)
	p := &pipeline{rts: &redistest.RoundTrips{Prefix: "storekeeper:"}, ended: map[string]chan struct{}{}}
	p.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 32})
	p.rdb.AddHook(p.rts)
	for _, h := range hooks {
		p.rdb.AddHook(h)
	}
	for i := range n {
		name := fmt.Sprintf("s%02d", i)
		p.stores = append(p.stores, name)
		p.ended[name] = make(chan struct{}, 1)
	}
	reg, err := store.Open(store.Config{DataDir: filepath.Join(b.TempDir(), "data"), Stores: p.stores, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	p.reg = reg
	w, err := New(Config{Redis: p.rdb, Registry: reg, Node: "n1", Concurrency: benchConcurrency,
		TaskCheckInterval: benchCheckInterval, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if wrap != nil {
		w.handlers[jobs.KindVerify] = wrap(w.handlers[jobs.KindVerify])
	}
	p.w = w
	p.client = jobsdb.NewClient(p.rdb, jobs.ClientConfig{})

	// The tailer reads on its own client: its round trips are the
	// watchers', not the jobs'.
	tailRDB := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if !watch {
		w.attemptDone = func(pl jobs.Payload) { p.ended[pl.Store] <- struct{}{} }
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := "0-0"
		for watch && ctx.Err() == nil {
			evs, err := jobsdb.ReadEvents(ctx, tailRDB, last, 1000, 100*time.Millisecond)
			now := time.Now()
			if err != nil {
				continue
			}
			for _, e := range evs {
				last = e.ID
				p.events.add(now.Sub(e.At))
				if e.Type == jobs.EventJobSucceeded || e.Type == jobs.EventJobFailed {
					p.ended[e.Store] <- struct{}{}
				}
			}
		}
	}()
	if err := w.Start(ctx); err != nil {
		b.Fatal(err)
	}
	p.stop = func() {
		w.Shutdown()
		cancel()
		wg.Wait()
		tailRDB.Close()
		reg.Close()
		p.rdb.Close()
	}
	return p
}

// job is a closed loop's job for slot i: enqueue its store's verify and
// wait until its attempt ends.
func (p *pipeline) job(b *testing.B) func(i int) {
	return func(i int) {
		p.enqueue(b, p.stores[i])
		<-p.ended[p.stores[i]]
	}
}

func (p *pipeline) enqueue(b *testing.B, st string) {
	res, err := p.client.Enqueue(context.Background(), jobs.Request{Kind: jobs.KindVerify, Store: st, Trigger: jobs.TriggerManual, Actor: "bench"})
	if err != nil || res.Deduplicated {
		b.Fatalf("enqueue: %+v, %v", res, err)
	}
}

// rawQueue is an asynq server and client with storekeeper's settings and
// a handler that only signals.
type rawQueue struct {
	rdb    *redis.Client
	rts    *redistest.RoundTrips
	client *asynq.Client
	srv    *asynq.Server
}

func startRaw(b *testing.B, srv *redistest.Server, handler func(*asynq.Task), hooks ...redis.Hook) *rawQueue {
	b.Helper()
	srv.FlushAll(b)
	q := &rawQueue{rts: &redistest.RoundTrips{}}
	q.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 32})
	q.rdb.AddHook(q.rts)
	for _, h := range hooks {
		q.rdb.AddHook(h)
	}
	q.client = asynq.NewClientFromRedisClient(q.rdb)
	q.srv = asynq.NewServerFromRedisClient(q.rdb, asynq.Config{
		Concurrency:       benchConcurrency,
		Queues:            map[string]int{jobs.NodeQueue("n1"): 10, jobs.NotifyQueue: 1},
		TaskCheckInterval: benchCheckInterval,
		Logger:            asynqLogger{quietLogger()},
		LogLevel:          asynq.WarnLevel,
	})
	if err := q.srv.Start(asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error { handler(t); return nil })); err != nil {
		b.Fatal(err)
	}
	return q
}

// rawSlots starts raw asynq for a closed loop of slots no-op tasks:
// job(i) enqueues slot i's task and waits until its handler has run.
func rawSlots(b *testing.B, srv *redistest.Server, slots int) (*rawQueue, func(i int)) {
	ended := make([]chan struct{}, slots)
	for i := range ended {
		ended[i] = make(chan struct{}, 1)
	}
	q := startRaw(b, srv, func(t *asynq.Task) {
		var slot int
		fmt.Sscanf(string(t.Payload()), `{"slot":%d}`, &slot)
		ended[slot] <- struct{}{}
	})
	return q, func(i int) {
		q.enqueue(b, fmt.Sprintf(`{"slot":%d}`, i))
		<-ended[i]
	}
}

func (q *rawQueue) enqueue(b *testing.B, payload string) {
	_, err := q.client.Enqueue(asynq.NewTask("verify", []byte(payload)), asynq.Queue(jobs.NodeQueue("n1")),
		asynq.MaxRetry(1), asynq.Timeout(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
}

func (q *rawQueue) stop() {
	q.srv.Shutdown()
	q.rdb.Close()
}

// idleGap waits a random 0–30 ms between jobs, so that enqueues land at
// every phase of the workers' polling.
func idleGap(b *testing.B) {
	b.StopTimer()
	// A real wall-clock wait: the gap between jobs is what the benchmark
	// varies, against workers that poll on the real clock.
	time.Sleep(time.Duration(rand.Int64N(int64(30 * time.Millisecond))))
	b.StartTimer()
}

// BenchmarkEnqueueToStart: at low load (one job at a time, spread over 4
// stores), how long from calling enqueue until the handler runs.
// storekeeper's handler is a verify of an empty store; the time stops as
// it is entered.
func BenchmarkEnqueueToStart(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	b.Run("storekeeper", func(b *testing.B) {
		started := make(chan time.Time, 1)
		p := startPipeline(b, srv, 4, true, func(h handlerFunc) handlerFunc {
			return func(ctx context.Context, s Handle, pl jobs.Payload) (outcome, error) {
				started <- time.Now()
				return h(ctx, s, pl)
			}
		})
		defer p.stop()
		var lat samples
		b.ResetTimer()
		for i := range b.N {
			idleGap(b)
			st := p.stores[i%len(p.stores)]
			t0 := time.Now()
			p.enqueue(b, st)
			lat.add((<-started).Sub(t0))
			<-p.ended[st]
		}
		b.StopTimer()
		lat.report(b, "start")
		p.events.report(b, "event")
	})
	b.Run("raw", func(b *testing.B) {
		started := make(chan time.Time, 1)
		ended := make(chan struct{}, 1)
		q := startRaw(b, srv, func(*asynq.Task) { started <- time.Now(); ended <- struct{}{} })
		defer q.stop()
		var lat samples
		b.ResetTimer()
		for i := range b.N {
			idleGap(b)
			t0 := time.Now()
			q.enqueue(b, fmt.Sprintf(`{"job_id":"%d"}`, i))
			lat.add((<-started).Sub(t0))
			<-ended
		}
		b.StopTimer()
		lat.report(b, "start")
	})
}

// closedLoop runs b.N jobs from slots goroutines, each running one job
// at a time (job(slot) enqueues and waits for the end), and reports jobs/s.
func closedLoop(b *testing.B, slots int, job func(slot int)) {
	var left atomic.Int64
	left.Store(int64(b.N))
	start := time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range slots {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				job(i)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}

// noop is the most trivial job: a handler that returns at once. What is
// left is the pipeline: enqueue, record, events, history, stats.
func noop(handlerFunc) handlerFunc {
	return func(context.Context, Handle, jobs.Payload) (outcome, error) {
		return outcome{Status: jobs.StatusVerified}, nil
	}
}

// BenchmarkThroughput: trivial jobs back to back, 16 in flight, on 4
// asynq workers. storekeeper's jobs are verifies of 16 empty stores, each
// store's next enqueued when its previous one ends (a store takes one job
// at a time, and an equal job in flight would be deduplicated); raw asynq
// runs no-op tasks in 16 slots the same way.
//
//   - storekeeper: the verify handler returns at once (pipeline only)
//   - watched: the same, with a tailer reading every event as the API does
//   - verify: real verifies of the empty stores (a checkpoint and its fsyncs)
//   - raw: asynq, a no-op handler
//
// jobs/s is the throughput; rt/job the round trips per job of each side's
// client and workers, ours-rt/job those that touch storekeeper's keys;
// go-cpu and redis-cpu what the process and the server spent per job.
func BenchmarkThroughput(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const slots = 16
	run := func(b *testing.B, watch bool, wrap func(handlerFunc) handlerFunc) {
		p := startPipeline(b, srv, slots, watch, wrap)
		defer p.stop()
		rts0, cmds0, ours0 := p.rts.Total(), p.rts.Commands(), p.rts.Matching()
		go0, redis0 := redistest.CPU(b, p.rdb)
		closedLoop(b, slots, p.job(b))
		b.ReportMetric(float64(p.rts.Total()-rts0)/float64(b.N), "rt/job")
		b.ReportMetric(float64(p.rts.Commands()-cmds0)/float64(b.N), "cmd/job")
		b.ReportMetric(float64(p.rts.Matching()-ours0)/float64(b.N), "ours-rt/job")
		redistest.ReportCPU(b, p.rdb, go0, redis0, "job")
		if watch {
			p.events.report(b, "event")
		}
	}
	b.Run("storekeeper", func(b *testing.B) { run(b, false, noop) })
	b.Run("watched", func(b *testing.B) { run(b, true, noop) })
	b.Run("verify", func(b *testing.B) { run(b, false, nil) })
	b.Run("raw", func(b *testing.B) {
		q, job := rawSlots(b, srv, slots)
		defer q.stop()
		rts0, cmds0 := q.rts.Total(), q.rts.Commands()
		go0, redis0 := redistest.CPU(b, q.rdb)
		closedLoop(b, slots, job)
		b.ReportMetric(float64(q.rts.Total()-rts0)/float64(b.N), "rt/job")
		b.ReportMetric(float64(q.rts.Commands()-cmds0)/float64(b.N), "cmd/job")
		redistest.ReportCPU(b, q.rdb, go0, redis0, "job")
	})
}

// BenchmarkScriptTime: where Redis's time per job goes in the
// throughput run's pipeline (storekeeper's side only): each script's
// time inside Redis per call, from SLOWLOG with its threshold at 0 (which
// itself adds to every command, so these sum to more than the
// throughput run's redis-cpu-us/job). start, end: ChangeScript by its
// op (the end also does asynq's done for the task: keyspace.AsynqAck);
// enqueue: EnqueueScript; asynq-dequeue, asynq-done: asynq's own
// scripts, told apart by their first key (asynq-done only appears for a
// task whose end did not acknowledge it).
//
//	go test -run '^$' -bench '^BenchmarkScriptTime$' -benchtime 3000x ./worker
func BenchmarkScriptTime(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const slots = 16
	p := startPipeline(b, srv, slots, false, noop)
	defer p.stop()
	ctx := context.Background()
	if err := p.rdb.ConfigSet(ctx, "slowlog-log-slower-than", "0").Err(); err != nil {
		b.Fatal(err)
	}
	// Each job logs about twenty commands, its scripts' own included.
	if err := p.rdb.ConfigSet(ctx, "slowlog-max-len", strconv.Itoa(40*b.N)).Err(); err != nil {
		b.Fatal(err)
	}
	p.rdb.SlowLogReset(ctx)
	closedLoop(b, slots, p.job(b))
	b.StopTimer()
	logs, err := p.rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	change, enqueue := keyspace.ChangeScript.Hash(), keyspace.EnqueueScript.Hash()
	total, calls := map[string]time.Duration{}, map[string]int{}
	for _, l := range logs {
		if len(l.Args) < 6 || !strings.EqualFold(l.Args[0], "evalsha") {
			continue
		}
		label := ""
		switch sha, first := l.Args[1], l.Args[3]; {
		case sha == change:
			label, _, _ = strings.Cut(l.Args[5], ":") // the op: start:<run>, end:<run>
		case sha == enqueue:
			label = "enqueue"
		case asynqScript(first, "pending"):
			label = "asynq-dequeue"
		case asynqScript(first, "active"):
			label = "asynq-done"
		default:
			continue
		}
		total[label] += l.Duration
		calls[label]++
	}
	for label, d := range total {
		b.ReportMetric(float64(d.Microseconds())/float64(calls[label]), label+"-redis-us")
	}
}

// BenchmarkRedisCommands: where Redis's time per job goes in the
// throughput run's pipeline, each side alone: from Redis's INFO
// commandstats, reset before the side runs, the microseconds per job spent
// in EVAL/EVALSHA (scripts, what they call included), in the commands
// the scripts and clients call (every other command: "called-us"), and
// how many of those there are ("called/job"); XADD and HSET, the two
// that cost most, also alone. What a script costs beyond
// what it calls is Lua's own. A diagnostic beside BenchmarkThroughput,
// not in `make bench`'s report:
//
//	go test -run '^$' -bench '^BenchmarkRedisCommands$' -benchtime 4000x ./worker
func BenchmarkRedisCommands(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const slots = 16
	run := func(b *testing.B, rdb *redis.Client, job func(i int)) {
		ctx := context.Background()
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		closedLoop(b, slots, job)
		b.StopTimer()
		var scriptUS, calledUS, called float64
		for name, st := range redistest.CommandStats(b, rdb) {
			switch name {
			case "eval", "evalsha":
				scriptUS += st.Usec
			case "info", "config|resetstat":
			default:
				calledUS, called = calledUS+st.Usec, called+st.Calls
			}
			if name == "xadd" || name == "hset" { // the two dearest
				b.ReportMetric(st.Usec/float64(b.N), name+"-us/job")
				b.ReportMetric(st.Calls/float64(b.N), name+"/job")
			}
		}
		n := float64(b.N)
		b.ReportMetric(scriptUS/n, "script-us/job")
		b.ReportMetric(calledUS/n, "called-us/job")
		b.ReportMetric(called/n, "called/job")
	}
	b.Run("storekeeper", func(b *testing.B) {
		p := startPipeline(b, srv, slots, false, noop)
		defer p.stop()
		run(b, p.rdb, p.job(b))
	})
	b.Run("raw", func(b *testing.B) {
		q, job := rawSlots(b, srv, slots)
		defer q.stop()
		run(b, q.rdb, job)
	})
}

// asynqScript reports whether first, an asynq script's first key, is a
// queue's list named list: asynq's dequeue starts with "pending", its
// done with "active".
func asynqScript(first, list string) bool {
	return strings.HasPrefix(first, "asynq:") && strings.HasSuffix(first, ":"+list)
}

// dequeueTimer times the round trips of asynq's dequeue script, told
// apart by its first key as BenchmarkScriptTime does: how long asynq's
// processor, which dequeues one task at a time, waits for each.
type dequeueTimer struct{ samples }

func (t *dequeueTimer) DialHook(next redis.DialHook) redis.DialHook { return next }

func (t *dequeueTimer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (t *dequeueTimer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		a := c.Args()
		if len(a) < 4 || a[0] != "evalsha" {
			return next(ctx, c)
		}
		if first, _ := a[3].(string); !asynqScript(first, "pending") {
			return next(ctx, c)
		}
		t0 := time.Now()
		err := next(ctx, c)
		t.add(time.Since(t0))
		return err
	}
}

// BenchmarkJobPhases: where a trivial job's time goes in the throughput
// run's closed loop (16 in flight, 4 asynq workers), each phase's p50 and
// p99: enqueue (the client's call), queued (from the enqueue's return
// until the handler is entered: the wait in asynq's queue, asynq's
// dequeue and, for storekeeper, the store's slot and the attempt's
// start), end (storekeeper: from the handler's entry until the loop
// learns the job ended, which is the attempt's end), and dequeue (each
// round trip of asynq's dequeue script). A diagnostic beside
// BenchmarkThroughput, not in `make bench`'s report:
//
//	go test -run '^$' -bench '^BenchmarkJobPhases$' -benchtime 3000x ./worker
func BenchmarkJobPhases(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const slots = 16
	type phases struct {
		enqueue, queued, end samples
		mu                   sync.Mutex
		entered              map[string]time.Time // store or slot -> its job's handler entered
	}
	enter := func(ph *phases, key string) {
		ph.mu.Lock()
		ph.entered[key] = time.Now()
		ph.mu.Unlock()
	}
	// job enqueues through enqueue, waits for wait, and records the phases.
	job := func(ph *phases, key string, enqueue, wait func()) {
		t0 := time.Now()
		enqueue()
		t1 := time.Now()
		wait()
		t2 := time.Now()
		ph.mu.Lock()
		in := ph.entered[key]
		ph.mu.Unlock()
		ph.enqueue.add(t1.Sub(t0))
		ph.queued.add(in.Sub(t1))
		ph.end.add(t2.Sub(in))
	}
	b.Run("storekeeper", func(b *testing.B) {
		ph := &phases{entered: map[string]time.Time{}}
		var deq dequeueTimer
		p := startPipeline(b, srv, slots, false, func(handlerFunc) handlerFunc {
			return func(_ context.Context, _ Handle, pl jobs.Payload) (outcome, error) {
				enter(ph, pl.Store)
				return outcome{Status: jobs.StatusVerified}, nil
			}
		}, &deq)
		defer p.stop()
		closedLoop(b, slots, func(i int) {
			st := p.stores[i]
			job(ph, st, func() { p.enqueue(b, st) }, func() { <-p.ended[st] })
		})
		ph.enqueue.report(b, "enqueue")
		ph.queued.report(b, "queued")
		ph.end.report(b, "end")
		deq.report(b, "dequeue")
	})
	b.Run("raw", func(b *testing.B) {
		ph := &phases{entered: map[string]time.Time{}}
		ended := make([]chan struct{}, slots)
		for i := range ended {
			ended[i] = make(chan struct{}, 1)
		}
		var deq dequeueTimer
		q := startRaw(b, srv, func(t *asynq.Task) {
			var slot int
			fmt.Sscanf(string(t.Payload()), `{"slot":%d}`, &slot)
			enter(ph, strconv.Itoa(slot))
			ended[slot] <- struct{}{}
		}, &deq)
		defer q.stop()
		closedLoop(b, slots, func(i int) {
			job(ph, strconv.Itoa(i), func() { q.enqueue(b, fmt.Sprintf(`{"slot":%d}`, i)) }, func() { <-ended[i] })
		})
		ph.enqueue.report(b, "enqueue")
		ph.queued.report(b, "queued")
		deq.report(b, "dequeue")
	})
}
