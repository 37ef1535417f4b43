package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"storekeeper/jobmetrics"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// clusterInRedis writes what a small cluster keeps in Redis: stores owned
// by a live node with published stats, and jobs pending in its queue.
func clusterInRedis(t *testing.T, rdb redis.UniversalClient, stores int) {
	t.Helper()
	ctx := t.Context()
	for i := range stores {
		name := fmt.Sprintf("s%d", i)
		rdb.HSet(ctx, keyspace.StoresKey, name, "n1")
		rdb.Set(ctx, keyspace.StatsKey(name), `{"node":"n1","stats":{"state":"open","disk_bytes":1000}}`, 0)
	}
	if err := jobsdb.NodeUp(ctx, rdb, jobs.NodeInfo{Node: "n1", At: time.Now()}, time.Hour, 1000); err != nil {
		t.Fatal(err)
	}
	jc := jobsdb.NewClient(rdb, jobs.ClientConfig{})
	for i := range min(stores, 3) {
		if _, err := jc.Enqueue(ctx, jobs.Request{Kind: jobs.KindCompact, Store: fmt.Sprintf("s%d", i), Trigger: jobs.TriggerManual, Actor: "t"}); err != nil {
			t.Fatal(err)
		}
	}
}

func scrape(t *testing.T, h http.Handler, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// /metrics scraped 20 times a second costs Redis at most 5 commands a
// scrape on average (the cluster and queue metrics come from a snapshot
// read at most every 2 s), and what it serves is at most 2 s old. Time is
// a fake clock: a scrape every 50 ms of it, for 4 s (two refreshes).
func TestMetricsScrapeCost(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	clusterInRedis(t, rdb, 8)
	tokens, _ := ParseTokens("v:viewer:" + wsToken)
	clock := clockwork.NewFakeClock()
	s, err := New(Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler), Clock: clock}) // not started: no tailer on rdb
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	cnt := &redistest.RoundTrips{}
	rdb.AddHook(cnt)
	h := s.Handler()
	const scrapes, every = 80, time.Second / 20
	for i := range scrapes {
		if rec := scrape(t, h); rec.Code != 200 || !strings.Contains(rec.Body.String(), `storekeeper_store_disk_bytes{node="n1",store="s7"} 1000`) {
			t.Fatalf("scrape %d: %d\n%s", i, rec.Code, rec.Body)
		}
		clock.Advance(every)
	}
	cmds := cnt.Commands()
	t.Logf("%d scrapes over %s: %d Redis commands (%.2f a scrape)", scrapes, scrapes*every, cmds, float64(cmds)/scrapes)
	if per := float64(cmds) / scrapes; per > 5 {
		t.Fatalf("%d scrapes over %s cost %d Redis commands, %.1f a scrape; want at most 5", scrapes, scrapes*every, cmds, per)
	}

	// A change shows within 2 s (of the fake clock).
	rdb.Set(t.Context(), keyspace.StatsKey("s7"), `{"node":"n1","stats":{"state":"open","disk_bytes":2000}}`, 0)
	changed := `storekeeper_store_disk_bytes{node="n1",store="s7"} 2000`
	shown := func() bool { return strings.Contains(scrape(t, h).Body.String(), changed) }
	for waited := time.Duration(0); !shown(); waited += every {
		if waited > jobmetrics.DefaultMaxAge {
			t.Fatalf("/metrics still serves a value changed %s ago", waited)
		}
		clock.Advance(every)
	}
}
