package e2e

// Benchmarks of the API beside raw asynq and raw Melody, on a private
// redis-server: `make bench` reports them in docs/BENCHMARKS.md.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/hibiken/asynq"
	"github.com/olahol/melody"
	"github.com/redis/go-redis/v9"

	"storekeeper/api"
	"storekeeper/internal/keyspace"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

func percentiles(b *testing.B, d []time.Duration, name string) {
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[min(len(d)-1, int(q*float64(len(d))))]) / 1e6 }
	b.ReportMetric(at(0.5), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}

// apiOnly runs the API (no worker) on srv with n stores owned by a live
// node, each with published stats: what a large deployment looks like to
// the API.
func apiOnly(b *testing.B, srv *redistest.Server, n int) (*api.Server, *redis.Client, *redistest.RoundTrips) {
	srv.FlushAll(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
	cnt := &redistest.RoundTrips{}
	stats := `{"name":"%s","state":"open","disk_bytes":123456789,"live_bytes":100000000,"reclaimable_bytes":1000000,"read_amp":3,"levels":[{"level":0,"tables":2,"bytes":1000},{"level":6,"tables":40,"bytes":99999000}]}`
	pipe := rdb.Pipeline()
	for i := range n {
		name := fmt.Sprintf("store-%04d", i)
		pipe.HSet(b.Context(), keyspace.StoresKey, name, "n1")
		pipe.Set(b.Context(), keyspace.StatsKey(name), fmt.Sprintf(`{"node":"n1","stats":`+stats+`,"backups":[{"id":"20261122T000000.000Z-000001","created_at":"%s","verified_at":"%s"}],"at":"%s"}`,
			name, time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339)), 0)
	}
	if _, err := pipe.Exec(b.Context()); err != nil {
		b.Fatal(err)
	}
	if err := jobsdb.NodeUp(b.Context(), rdb, jobs.NodeInfo{Node: "n1", At: time.Now()}, time.Hour, 1000); err != nil {
		b.Fatal(err)
	}
	rdb.AddHook(cnt)
	tokens, _ := api.ParseTokens("ops:operator:" + operatorToken)
	a, err := api.New(api.Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	return a, rdb, cnt
}

// fromClients runs b.N requests from clients goroutines, one at a time
// each (request(i) makes request i), and reports req/s and the latency
// percentiles.
func fromClients(b *testing.B, clients int, request func(i int64) error) {
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	start := time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
				t0 := time.Now()
				err := request(i)
				lat[c] = append(lat[c], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	percentiles(b, slices.Concat(lat...), "req")
}

// BenchmarkEnqueueAPI: POST /api/admin/compact/:store over 1,000 stores in
// turn from 32 keep-alive clients, vs asynq.Client.Enqueue from 32
// goroutines. A request that finds the store's compaction already pending
// is deduplicated: served, and counted apart. http-only: the same requests
// from the same clients answered by a bare gin handler with storekeeper's
// own answer to one such request (its status, headers and body), no
// middleware and no Redis: what the HTTP stack alone costs on this machine.
func BenchmarkEnqueueAPI(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const stores, clients = 1000, 32
	b.Run("storekeeper", func(b *testing.B) {
		a, rdb, cnt := apiOnly(b, srv, stores)
		defer rdb.Close()
		var dedup atomic.Int64
		rt0, cmd0 := cnt.Total(), cnt.Commands()
		go0, redis0 := redistest.CPU(b, rdb)
		fromClients(b, clients, compactRequests(b, a.Handler(), clients, &dedup))
		redistest.ReportCPU(b, rdb, go0, redis0, "req")
		// A request's script may share its round trip with others'
		// (jobsdb.Client.batched): rt/req counts the shared round trips,
		// cmd/req what each request costs Redis without that sharing.
		b.ReportMetric(float64(cnt.Total()-rt0)/float64(b.N), "rt/req")
		b.ReportMetric(float64(cnt.Commands()-cmd0)/float64(b.N), "cmd/req")
		b.ReportMetric(float64(dedup.Load())/float64(b.N), "dedup-share")
	})
	b.Run("http-only", func(b *testing.B) {
		a, rdb, _ := apiOnly(b, srv, stores)
		defer rdb.Close()
		req := httptest.NewRequest("POST", "/api/admin/compact/store-0000", nil)
		req.Header.Set("Authorization", "Bearer "+operatorToken)
		answer := httptest.NewRecorder()
		a.Handler().ServeHTTP(answer, req)
		if answer.Code != 202 {
			b.Fatalf("storekeeper's answer: %d %s", answer.Code, answer.Body)
		}
		bare := gin.New()
		bare.POST("/api/admin/compact/:store", func(c *gin.Context) {
			for k, v := range answer.Header() {
				c.Writer.Header()[k] = v
			}
			c.Data(answer.Code, answer.Header().Get("Content-Type"), answer.Body.Bytes())
		})
		var dedup atomic.Int64
		go0, redis0 := redistest.CPU(b, rdb)
		fromClients(b, clients, compactRequests(b, bare, clients, &dedup))
		redistest.ReportCPU(b, rdb, go0, redis0, "req")
	})
	b.Run("raw", func(b *testing.B) {
		srv.FlushAll(b)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
		defer rdb.Close()
		aq := asynq.NewClientFromRedisClient(rdb)
		go0, redis0 := redistest.CPU(b, rdb)
		fromClients(b, clients, func(i int64) error {
			_, err := aq.Enqueue(asynq.NewTask("compact", fmt.Appendf(nil, `{"store":"store-%04d"}`, i%stores)), asynq.Queue("node.n1"), asynq.MaxRetry(3))
			return err
		})
		redistest.ReportCPU(b, rdb, go0, redis0, "req")
	})
}

// compactRequests serves h on a loopback HTTP server for the rest of b and
// returns request i of the API enqueue benchmark, sent by one of clients
// keep-alive connections: a forced compaction of one of 1,000 stores in
// turn, its answer read as a client reads it (dedup counts the answers
// saying deduplicated).
func compactRequests(b *testing.B, h http.Handler, clients int, dedup *atomic.Int64) func(int64) error {
	hs := httptest.NewServer(h)
	b.Cleanup(hs.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	return func(i int64) error {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/admin/compact/store-%04d", hs.URL, i%1000), nil)
		req.Header.Set("Authorization", "Bearer "+operatorToken)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Deduplicated bool `json:"deduplicated"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 202 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if body.Deduplicated {
			dedup.Add(1)
		}
		return nil
	}
}

// BenchmarkDashboard: GET /api/dashboard with 1,000 stores.
func BenchmarkDashboard(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	b.Run("storekeeper", func(b *testing.B) {
		a, rdb, _ := apiOnly(b, srv, 1000)
		defer rdb.Close()
		h := a.Handler()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			req, _ := http.NewRequest("GET", "/api/dashboard", nil)
			req.Header.Set("Authorization", "Bearer "+operatorToken)
			rec := httptest.NewRecorder()
			t0 := time.Now()
			h.ServeHTTP(rec, req)
			lat = append(lat, time.Since(t0))
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), "store-0999") {
				b.Fatalf("dashboard: %d", rec.Code)
			}
		}
		b.StopTimer()
		percentiles(b, lat, "req")
	})
}

// BenchmarkWatchers: 1,000 WebSocket watchers, 200 events a second for
// 10 s (b.N rounds of it). storekeeper: events appended to the stream,
// tailed and fanned out by the API; filters-100: the same, each watcher
// with 100 filter values (store=store-0000 and 99 job ids, the events'
// among them: it gets every event too); raw: melody.Broadcast of the same
// messages. Latency is from the append (or the Broadcast call) until a
// watcher has read the message; delivered is the share that arrived;
// cpu-us/frame is the CPU this process (server and watchers) spent per
// frame delivered, the steadier measure of what filters cost.
func BenchmarkWatchers(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const watchers, rate = 1000, 200
	const seconds = 10
	const benchJob = "01KBENCHJOB0000000000000042"
	// ready waits until every watcher is subscribed.
	run := func(b *testing.B, url string, header http.Header, ready func([]*websocket.Conn), publish func(i int, at time.Time)) {
		var lat [watchers][]time.Duration
		var got atomic.Int64
		conns := make([]*websocket.Conn, watchers)
		for i := range conns {
			c, _, err := websocket.DefaultDialer.Dial(url, header)
			if err != nil {
				b.Fatal(err)
			}
			conns[i] = c
		}
		ready(conns)
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				for {
					var m struct {
						Phase string    `json:"phase"`
						At    time.Time `json:"at"`
					}
					if err := c.ReadJSON(&m); err != nil {
						return
					}
					if m.Phase == "bench" {
						lat[i] = append(lat[i], time.Since(m.At))
						got.Add(1)
					}
				}
			})
		}
		b.ResetTimer()
		cpu0 := redistest.ProcessCPU(b)
		total := 0
		for range b.N {
			tick := time.NewTicker(time.Second / rate)
			for i := range rate * seconds {
				<-tick.C
				publish(i, time.Now())
				total++
			}
			tick.Stop()
		}
		// Delivered measures loss, not speed (the latencies do): on this
		// 2-core machine the last of 2 million frames can trail the
		// publishing by more than 10 s, so wait up to 30 s for them.
		testsignal.Poll(30*time.Second, func() bool { return got.Load() >= int64(total*watchers) })
		b.StopTimer()
		cpu := redistest.ProcessCPU(b) - cpu0
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
		b.ReportMetric(float64(got.Load())/float64(total*watchers), "delivered")
		b.ReportMetric(cpu/float64(max(got.Load(), 1)), "cpu-us/frame")
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		percentiles(b, all, "event")
	}
	event := func(i int, at time.Time) jobs.Event {
		return jobs.Event{Type: jobs.EventJobProgress, Store: "store-0000", JobID: benchJob, Phase: "bench", Done: int64(i), At: at}
	}
	storekeeper := func(query string) func(b *testing.B) {
		return func(b *testing.B) {
			srv.FlushAll(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
			defer rdb.Close()
			tokens, _ := api.ParseTokens("ops:operator:" + operatorToken)
			// One token's 1,000 watchers: past the cap a token has by
			// default (64 on a process), which is not what this measures.
			a, err := api.New(api.Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler), MaxWatchersPerToken: watchers})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			a.Start(ctx)
			hs := httptest.NewServer(a.Handler())
			defer func() { hs.Close(); a.Close(); cancel() }()
			live := func(conns []*websocket.Conn) {
				for _, c := range conns {
					pushtest.WaitLive(b, c)
				}
			}
			run(b, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws?"+query, http.Header{"Authorization": {"Bearer " + operatorToken}}, live, func(i int, at time.Time) {
				if _, err := jobsdb.Append(ctx, rdb, keyspace.EventsStream, 100000, event(i, at)); err != nil {
					b.Error(err)
				}
			})
		}
	}
	b.Run("storekeeper", storekeeper(""))
	b.Run("filters-100", storekeeper(watchFilters(100, "store-0000", benchJob)))
	b.Run("raw", func(b *testing.B) {
		m := melody.New()
		m.Config.MessageBufferSize = 1024
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = m.HandleRequest(w, r) }))
		defer func() { hs.Close(); m.Close() }()
		// melody says nothing to a session it registered: its count is
		// all there is to wait for.
		registered := func(conns []*websocket.Conn) {
			if !testsignal.Poll(pushtest.LiveTimeout, func() bool { return m.Len() >= len(conns) }) {
				b.Fatalf("melody registered %d of %d sessions", m.Len(), len(conns))
			}
		}
		run(b, "ws"+strings.TrimPrefix(hs.URL, "http"), nil, registered, func(i int, at time.Time) {
			msg, _ := json.Marshal(event(i, at))
			_ = m.Broadcast(msg)
		})
	})
}
