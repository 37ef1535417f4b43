package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

// clusterInRedis writes what a small cluster keeps in Redis: stores owned
// by a live node with published stats, and jobs pending in its queue.
func clusterInRedis(t *testing.T, rdb redis.UniversalClient, stores int) {
	t.Helper()
	ctx := t.Context()
	for i := range stores {
		name := fmt.Sprintf("s%d", i)
		rdb.HSet(ctx, jobs.StoresKey, name, "n1")
		rdb.Set(ctx, jobs.StatsKey(name), `{"node":"n1","stats":{"state":"open","disk_bytes":1000}}`, 0)
	}
	if err := jobs.NodeUp(ctx, rdb, jobs.NodeInfo{Node: "n1", At: time.Now()}, time.Hour, 1000); err != nil {
		t.Fatal(err)
	}
	jc := jobs.NewClient(rdb, jobs.ClientConfig{})
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

// /metrics scraped 20 times in a second costs Redis at most 5 commands a
// scrape on average (the cluster and queue metrics come from a snapshot
// read at most every 2 s), and what it serves is at most a few seconds
// old.
func TestMetricsScrapeCost(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	clusterInRedis(t, rdb, 8)
	tokens, _ := ParseTokens("v:viewer:" + wsToken)
	s, err := New(Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)}) // not started: no tailer on rdb
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	cnt := &redistest.RoundTrips{}
	rdb.AddHook(cnt)
	h := s.Handler()
	const scrapes = 20
	start := time.Now()
	for i := range scrapes {
		if rec := scrape(t, h); rec.Code != 200 || !strings.Contains(rec.Body.String(), `storekeeper_store_disk_bytes{node="n1",store="s7"} 1000`) {
			t.Fatalf("scrape %d: %d\n%s", i, rec.Code, rec.Body)
		}
		// A real wall-clock wait: the claim is about a scrape rate in real
		// time against a snapshot aged on the real clock.
		time.Sleep(time.Second / scrapes)
	}
	took, cmds := time.Since(start), cnt.Commands()
	t.Logf("%d scrapes in %s: %d Redis commands (%.2f a scrape)", scrapes, took.Round(time.Millisecond), cmds, float64(cmds)/scrapes)
	if per := float64(cmds) / scrapes; per > 5 {
		t.Fatalf("%d scrapes in %s cost %d Redis commands, %.1f a scrape; want at most 5", scrapes, took.Round(time.Millisecond), cmds, per)
	}

	// A change shows within a few seconds.
	rdb.Set(t.Context(), jobs.StatsKey("s7"), `{"node":"n1","stats":{"state":"open","disk_bytes":2000}}`, 0)
	changed := time.Now()
	if !testsignal.Poll(3*time.Second, func() bool {
		return strings.Contains(scrape(t, h).Body.String(), `storekeeper_store_disk_bytes{node="n1",store="s7"} 2000`)
	}) {
		t.Fatal("/metrics still serves a value changed 3 s ago")
	}
	t.Logf("a change showed after %s", time.Since(changed).Round(time.Millisecond))
}
