package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// historyEntries appends n history entries as finishes do (with their
// index copies) over stores stores and four kinds, from 8 goroutines.
func historyEntries(b *testing.B, rdb *redis.Client, n, stores int) {
	kinds := []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify, jobs.KindRestore}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				h := jobs.HistoryEntry{JobID: jobs.NewID(), Kind: kinds[i%4], Store: fmt.Sprintf("store-%04d", i%stores),
					Status: jobs.StatusCompacted, Reason: "reclaimable bytes over threshold", Trigger: jobs.TriggerScheduled, Actor: jobs.ActorSystem,
					Attempts: 1, DurationMS: 1234, BytesBefore: 123456789, BytesAfter: 100000000, Node: "node-a", At: time.Now().UTC()}
				if _, err := jobsdb.AppendHistory(context.Background(), rdb, jobs.DefaultHistoryMaxLen, h); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// historyMemory is the Redis memory (MEMORY USAGE, every node sampled) of
// the history stream and of its indexes, per history entry.
func historyMemory(b *testing.B, rdb *redis.Client) (global, indexes float64) {
	ctx := context.Background()
	n := rdb.XLen(ctx, keyspace.HistoryStream).Val()
	g := rdb.MemoryUsage(ctx, keyspace.HistoryStream, 0).Val()
	var idx int64
	iter := rdb.Scan(ctx, 0, keyspace.HistoryStream+":*", 1000).Iterator()
	for iter.Next(ctx) {
		idx += rdb.MemoryUsage(ctx, iter.Val(), 0).Val()
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	return float64(g) / float64(n), float64(idx) / float64(n)
}

// BenchmarkHistoryFiltered: GET /api/history filtered by store, by kind
// and by both, limit=500 (and 50), on a history of 100,000 entries over
// 99 stores and four kinds, from 1 and 4 keep-alive clients, each query
// a different store or kind and a third of them paging (before=). It
// reports the latency percentiles, the Redis round trips and commands per
// query, and the memory per history entry of the stream and its indexes.
//
//	go test -run '^$' -bench BenchmarkHistoryFiltered -benchtime 2000x ./internal/e2e/
func BenchmarkHistoryFiltered(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	const n, stores = 100_000, 99 // every store has every kind
	a, rdb, cnt := apiOnly(b, srv, 0)
	defer rdb.Close()
	historyEntries(b, rdb, n, stores)
	global, indexes := historyMemory(b, rdb)
	// Cursors to page from: ids spread over the history.
	var cursors []string
	for _, m := range rdb.XRevRangeN(context.Background(), keyspace.HistoryStream, "+", "-", n).Val()[1000:] {
		if len(cursors) < 100 {
			cursors = append(cursors, m.ID)
		}
	}
	hs := httptest.NewServer(a.Handler())
	defer hs.Close()
	kinds := []string{"compact", "backup", "verify", "restore"}
	views := []struct {
		name  string
		query func(i int64) string
	}{
		{"store", func(i int64) string { return fmt.Sprintf("store=store-%04d", i%stores) }},
		{"kind", func(i int64) string { return "kind=" + kinds[i%4] }},
		{"store+kind", func(i int64) string { return fmt.Sprintf("store=store-%04d&kind=%s", i%stores, kinds[(i/stores)%4]) }},
		{"nosuchstore", func(int64) string { return "store=nosuchstore" }},
		{"unfiltered", func(int64) string { return "" }},
	}
	for _, limit := range []int{500, 50} {
		for _, v := range views {
			for _, clients := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/limit=%d/clients=%d", v.name, limit, clients), func(b *testing.B) {
					tr := &http.Transport{MaxIdleConnsPerHost: clients}
					defer tr.CloseIdleConnections()
					client := &http.Client{Transport: tr}
					rt0, cmd0 := cnt.Total(), cnt.Commands()
					fromClients(b, clients, func(i int64) error {
						q := fmt.Sprintf("%s&limit=%d", v.query(i), limit)
						if i%3 == 2 {
							q += "&before=" + cursors[i%int64(len(cursors))]
						}
						req, _ := http.NewRequest("GET", hs.URL+"/api/history?"+q, nil)
						req.Header.Set("Authorization", "Bearer "+operatorToken)
						resp, err := client.Do(req)
						if err != nil {
							return err
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							return fmt.Errorf("?%s: %d", q, resp.StatusCode)
						}
						return nil
					})
					b.ReportMetric(float64(cnt.Total()-rt0)/float64(b.N), "round-trips/op")
					b.ReportMetric(float64(cnt.Commands()-cmd0)/float64(b.N), "redis-cmds/op")
					b.ReportMetric(global, "stream-B/entry")
					b.ReportMetric(indexes, "index-B/entry")
				})
			}
		}
	}
}
