package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// The dashboard at 100,000 stores on 1,000 nodes (storekeeper api on a
// Redis holding what their owners publish, and asynq's 1,000 node
// queues), in headless Chromium: the first page of stores paints, the
// list grows a page at a time as it is scrolled, and no request the page
// makes reads more than a page of stores (each asks with limit=, and
// every answer stays small). The first paint is logged, not asserted
// (docs/SCALING.md has it): timing belongs to make scale.
func TestDashboardAt100kStores(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, writes 100,000 stores to Redis and starts a browser")
	}
	const stores, nodes, page = 100_000, 1000, 100
	browser := chromium(t)
	bin := buildBinary(t)
	rs := redistest.Start(t)
	const token = "browser-scale-test-operator-token"
	srv := startProcess(t, bin, "api", nil, "api", "--redis", rs.URL(), "--tokens", "ops:operator:"+token)
	srv.waitReady(t)
	publishStores(t, rs.Client(t), stores, nodes)

	ctx, _ := browserTab(t, browser, 90*time.Second, chromedp.WindowSize(1400, 1000))
	type css = chromedp.CSS
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	// The browser starts first, so the paint is timed from navigation.
	do("start the browser", chromedp.Navigate("about:blank"))
	start := time.Now()
	do("the first page of stores", chromedp.Navigate("http://"+srv.addr+"/#token="+token),
		chromedp.WaitVisible(css(fmt.Sprintf(`#stores tr[data-store="%s"]`, storeName(page-1)))))
	t.Logf("first paint of the store list at %d stores: %s", stores, time.Since(start).Round(time.Millisecond))
	rows := func() int { return int(eval(`document.querySelectorAll("#stores tbody tr").length`).(float64)) }
	if n := rows(); n != page {
		t.Fatalf("%d rows on the first paint, want %d", n, page)
	}
	if s := eval(`document.querySelector("#summary").textContent`).(string); !strings.HasPrefix(s, fmt.Sprintf("%d stores · %d/%d nodes up", stores, nodes, nodes)) {
		t.Fatalf("summary %q", s)
	}
	if s := eval(`document.querySelector("#queues tbody").textContent`).(string); !strings.Contains(s, fmt.Sprintf("%d queues", nodes)) {
		t.Fatalf("queues %q: want a pointer to asynqmon for %d queues", s, nodes)
	}
	for want := 2 * page; want <= 4*page; want += page {
		eval(`window.scrollTo(0, document.body.scrollHeight); true`)
		do(fmt.Sprintf("scrolled to %d stores", want), chromedp.WaitVisible(css(fmt.Sprintf(`#stores tr[data-store="%s"]`, storeName(want-1)))))
	}
	if n := rows(); n > 5*page {
		t.Fatalf("%d rows after three scrolls: pages loaded that were not scrolled to", n)
	}
	var reqs []struct {
		Name string  `json:"name"`
		Size float64 `json:"size"`
		Took float64 `json:"took"` // ms, as the browser saw it
	}
	raw, _ := json.Marshal(eval(`performance.getEntriesByType("resource").filter((e) => e.name.includes("/api/")).map((e) => ({name: e.name, size: e.encodedBodySize, took: e.duration}))`))
	if err := json.Unmarshal(raw, &reqs); err != nil || len(reqs) == 0 {
		t.Fatalf("the page's API requests: %v %s", err, raw)
	}
	lists := 0
	for _, r := range reqs {
		list := strings.Contains(r.Name, "/api/dashboard") || strings.Contains(r.Name, "/api/stores?") || strings.HasSuffix(r.Name, "/api/stores")
		if list {
			lists++
			t.Logf("%s: %.0f bytes in %.0f ms", r.Name[strings.Index(r.Name, "/api/"):], r.Size, r.Took)
			if !strings.Contains(r.Name, "limit=") {
				t.Errorf("%s asks for every store", r.Name)
			}
		}
		if r.Size > 1<<20 {
			t.Errorf("%s answered %.0f bytes", r.Name, r.Size)
		}
	}
	if lists < 4 {
		t.Errorf("%d store list requests, want the dashboard and three pages: %v", lists, reqs)
	}
}

func storeName(i int) string { return fmt.Sprintf("s%06d", i) }

// publishStores makes n stores owned by nodes nodes (round robin), each
// node up with its stores and each store with what an owner with off-site
// backups publishes; and asynq's set of queues lists each node's queue
// (asynq:queues, which asynq's inspector reads).
func publishStores(t *testing.T, rdb *redis.Client, n, nodes int) {
	t.Helper()
	ctx := t.Context()
	now := time.Now().UTC()
	byNode := make([][]string, nodes)
	for start := 0; start < n; start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i < min(start+1000, n); i++ {
			name, node := storeName(i), fmt.Sprintf("node%03d", i%nodes)
			byNode[i%nodes] = append(byNode[i%nodes], name)
			st := jobs.StoreStatus{Node: node, At: now, Stats: jobs.StoreStats{State: jobs.StoreOpen, DiskBytes: 1 << 20},
				Targets: []jobs.TargetStatus{{Target: "vault", BackupID: "b1", BackupAt: now.Add(-time.Hour)}}}
			for b := range 3 {
				st.Backups = append(st.Backups, jobs.BackupSummary{ID: fmt.Sprintf("b%d", 3-b), Store: name, CreatedAt: now.Add(-time.Duration(b+1) * time.Hour), VerifiedAt: now})
			}
			js, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			pipe.HSet(ctx, keyspace.StoresKey, name, node)
			pipe.Set(ctx, keyspace.StatsKey(name), js, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, stores := range byNode {
		node := fmt.Sprintf("node%03d", i)
		if err := jobsdb.NodeUp(ctx, rdb, jobs.NodeInfo{Node: node, Stores: stores, At: now}, 10*time.Minute, 1000); err != nil {
			t.Fatal(err)
		}
		rdb.SAdd(ctx, "asynq:queues", jobs.NodeQueue(node))
	}
}
