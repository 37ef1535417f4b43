package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

// The store list pages: name order, next_cursor until the last page,
// filters by node, state and health applied while walking, bad
// parameters refused with 400.
func TestStoreListPages(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	now := time.Now().UTC()
	for _, node := range []string{"n0", "n1", "n2"} { // up: a heartbeat each
		if err := rdb.SAdd(t.Context(), keyspace.NodesKey, node).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(t.Context(), keyspace.NodeKey(node), `{"node":"`+node+`"}`, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	const n = 1200
	for i := range n {
		st := jobs.StoreStatus{Node: fmt.Sprintf("n%d", i%3), Stats: jobs.StoreStats{Name: fmt.Sprintf("s%05d", i), State: jobs.StoreOpen}, At: now,
			Backups: []jobs.BackupSummary{{ID: "b", CreatedAt: now, VerifiedAt: now}}}
		if i%100 == 7 {
			st.Stats.State, st.Stats.Error = jobs.StoreCorrupt, "checksum mismatch"
		}
		publishStatus(t, rdb, st)
	}
	get := func(query string) (int, storePage) {
		t.Helper()
		req := httptest.NewRequest("GET", "/api/stores?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+secOperator)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var p storePage
		if rec.Code == 200 {
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		}
		return rec.Code, p
	}
	// Walk every page.
	var names []string
	pages := 0
	for cursor := ""; ; pages++ {
		code, p := get("limit=500&cursor=" + cursor)
		if code != 200 || p.Total != n || len(p.Stores) > 500 {
			t.Fatalf("page %d: %d, total %d, %d stores", pages, code, p.Total, len(p.Stores))
		}
		for _, v := range p.Stores {
			names = append(names, v.Name)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(names) != n || pages != 2 {
		t.Fatalf("%d stores over %d pages, want %d over 3", len(names), pages+1, n)
	}
	for i, name := range names {
		if want := fmt.Sprintf("s%05d", i); name != want {
			t.Fatalf("store %d is %s, want %s: not in name order or repeated", i, name, want)
		}
	}
	// Filters.
	_, p := get("state=corrupt&limit=1000")
	if len(p.Stores) != n/100 || p.Next != "" {
		t.Fatalf("state=corrupt: %d stores, next %q; want %d and the end", len(p.Stores), p.Next, n/100)
	}
	_, p = get("health=corrupt&node=n1&limit=1000")
	for _, v := range p.Stores {
		if v.Node != "n1" || v.Stats.State != jobs.StoreCorrupt {
			t.Fatalf("health=corrupt&node=n1 gave %s on %s, %s", v.Name, v.Node, v.Stats.State)
		}
	}
	if len(p.Stores) != 4 {
		t.Fatalf("health=corrupt&node=n1: %d stores, want 4", len(p.Stores))
	}
	_, p = get("health=ok&limit=3")
	if len(p.Stores) != 3 || p.Stores[0].Name != "s00000" || p.Next != "s00002" {
		t.Fatalf("health=ok&limit=3: %+v next %q", len(p.Stores), p.Next)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=../x", "state=melted", "health=sad", "node=a%20b"} {
		if code, _ := get(q); code != 400 {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
}

// At 1,000 nodes, the reads every store view needs (each node's
// heartbeat, a megabyte and more with their store lists) are shared by
// the requests of a second instead of made by each: ten reads of one
// store read the nodes once (the code before read them ten times, and
// that made one store's p99 175 ms in make scale). A copy past its age is
// answered from while one refresh runs, and a change shows once it has.
// The paged dashboard lists no node's stores, in its schedules either:
// with more than 50 nodes they come grouped by spec (the code before
// answered 1.6 MB at 1,000 nodes).
func TestStoreReadsShareNodesAndSchedules(t *testing.T) {
	rdb := testRedis(t)
	clock := clockwork.NewFakeClock()
	s := newSecServer(t, rdb, func(c *Config) { c.Clock = clock })
	ctx := t.Context()
	const nodes, perNode = 1000, 100
	now := time.Now().UTC()
	pipe := rdb.Pipeline()
	for i := range nodes {
		node := fmt.Sprintf("node%04d", i)
		info := jobs.NodeInfo{Node: node, Host: "h", Instance: "i", StartedAt: now, At: now}
		sched := jobs.NodeSchedules{Node: node, Kinds: map[jobs.Kind]jobs.ScheduleInfo{
			jobs.KindVerify: {Spec: "*/10 * * * *", Next: now.Add(time.Duration(i) * time.Second)}, jobs.KindCompact: {Spec: "off"}}}
		for j := range perNode {
			info.Stores = append(info.Stores, fmt.Sprintf("n%04d-s%03d", i, j))
		}
		sched.Stores = info.Stores
		ib, _ := json.Marshal(info)
		sb, _ := json.Marshal(sched)
		pipe.SAdd(ctx, keyspace.NodesKey, node)
		pipe.Set(ctx, keyspace.NodeKey(node), ib, time.Minute)
		pipe.HSet(ctx, keyspace.SchedulesKey, node, sb)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		publishStatus(t, rdb, jobs.StoreStatus{Node: fmt.Sprintf("node%04d", i), At: now,
			Stats: jobs.StoreStats{Name: fmt.Sprintf("n%04d-s000", i), State: jobs.StoreOpen}})
	}
	cnt := &redistest.RoundTrips{Prefix: keyspace.NodesKey} // the nodes' set: a read of every node
	rdb.AddHook(cnt)
	get := func(path string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+secViewer)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		return rec
	}
	for range 10 {
		var v jobs.StoreView
		if err := json.Unmarshal(get("/api/stores/n0000-s000").Body.Bytes(), &v); err != nil || !v.NodeUp {
			t.Fatalf("store view %+v, %v", v, err)
		}
	}
	if n := cnt.Matching(); n != 1 {
		t.Fatalf("ten reads of one store read the nodes %d times; want once", n)
	}

	rec := get("/api/dashboard?limit=100")
	var d struct {
		Nodes          []jobs.NodeStatus    `json:"nodes"`
		Schedules      []jobs.NodeSchedules `json:"schedules"`
		ScheduleGroups []scheduleGroup      `json:"schedule_groups"`
		Stores         []jobs.StoreView     `json:"stores"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if size := rec.Body.Len(); size > 256<<10 {
		t.Fatalf("the dashboard's first page is %d bytes at %d nodes; want at most 256 KiB", size, nodes)
	}
	if len(d.Nodes) != nodes || len(d.Schedules) != 0 || len(d.ScheduleGroups) != 1 || len(d.Stores) != 100 {
		t.Fatalf("dashboard: %d nodes, %d schedules, groups %+v, %d stores", len(d.Nodes), len(d.Schedules), d.ScheduleGroups, len(d.Stores))
	}
	g := d.ScheduleGroups[0]
	if g.Nodes != nodes || g.Kinds[jobs.KindVerify].Spec != "*/10 * * * *" || !g.Kinds[jobs.KindVerify].Next.Equal(now) {
		t.Fatalf("schedule group %+v; want all %d nodes, verify */10, the soonest next run", g, nodes)
	}
	if n := cnt.Matching(); n != 1 {
		t.Fatalf("the dashboard read the nodes again (%d reads in all)", n)
	}

	// node0000 stops beating. Its stores show it down once a refresh has
	// read the nodes again; until then the older copy answers at once.
	if err := rdb.Del(ctx, keyspace.NodeKey("node0000")).Err(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(nodesMaxAge)
	testsignal.WaitFor(t, "the store's node shown down", func() bool {
		var v jobs.StoreView
		_ = json.Unmarshal(get("/api/stores/n0000-s000").Body.Bytes(), &v)
		return !v.NodeUp
	})
	if n := cnt.Matching(); n != 2 {
		t.Fatalf("the nodes were read %d times; want once more, by one refresh", n)
	}
}

// A paged dashboard's schedules (up to 50 nodes) are each node's as
// published, store list aside, sorted by node; the shared copy keeps its
// lists.
func TestPageSchedulesDropOnlyStoreLists(t *testing.T) {
	at := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	all := []jobs.NodeSchedules{
		{Node: "n2", Stores: []string{"b"}, Kinds: map[jobs.Kind]jobs.ScheduleInfo{jobs.KindVerify: {Spec: "@every 20m", Next: at}}, At: at},
		{Node: "n1", Stores: []string{"a"}, Kinds: map[jobs.Kind]jobs.ScheduleInfo{jobs.KindBackup: {Spec: "@every 15m"}}, At: at},
	}
	list, groups := pageSchedules(all)
	if len(groups) != 0 || len(list) != 2 || list[0].Node != "n1" || !list[1].At.Equal(at) || len(list[1].Stores) != 0 ||
		list[1].Kinds[jobs.KindVerify].Spec != "@every 20m" {
		t.Fatalf("paged schedules %+v, groups %+v", list, groups)
	}
	if len(all[0].Stores) != 1 {
		t.Fatal("the shared copy lost its store list")
	}
}

// The store index is read a thousand owners at a time: Redis is never
// held for the whole owners hash (one HGETALL of 100,000 fields held it
// for tens of milliseconds every second in make scale).
func TestStoreIndexReadsOwnersInChunks(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	const n = 2500
	pipe := rdb.Pipeline()
	for i := range n {
		pipe.HSet(t.Context(), keyspace.StoresKey, fmt.Sprintf("s%05d", i), fmt.Sprintf("n%d", i%7))
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	cnt := &redistest.RoundTrips{}
	rdb.AddHook(cnt)
	idx, err := s.readStoreIndex(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.names) != n || idx.names[0] != "s00000" || idx.names[n-1] != fmt.Sprintf("s%05d", n-1) || len(idx.byNode["n3"]) != n/7 {
		t.Fatalf("index of %d names, first %s, node n3 %d", len(idx.names), idx.names[0], len(idx.byNode["n3"]))
	}
	if got := cnt.Named("hgetall"); got != 0 || cnt.Named("hscan") < n/1000 {
		t.Fatalf("%d HGETALL and %d HSCAN for %d owners; want none and at least %d", got, cnt.Named("hscan"), n, n/1000)
	}
}
