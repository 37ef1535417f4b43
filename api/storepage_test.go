package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
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
