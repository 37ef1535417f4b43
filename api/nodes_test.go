package api

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// GET /api/nodes lists every node that has run, by name, each with its
// last heartbeat while it is up (what the dashboard's paged answer leaves
// out); ?node= answers one, 404 unknown_node for a node never seen.
func TestNodesListsEveryNodeWithItsHeartbeat(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	ctx := t.Context()
	if err := jobsdb.NodeUp(ctx, rdb, jobs.NodeInfo{Node: "n2", Stores: []string{"orders", "users"}, At: time.Now()}, time.Minute, 100); err != nil {
		t.Fatal(err)
	}
	if err := rdb.SAdd(ctx, keyspace.NodesKey, "n1").Err(); err != nil { // ran once, its heartbeat expired
		t.Fatal(err)
	}
	get := func(path string) (int, []jobs.NodeStatus, string) {
		t.Helper()
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+secViewer)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body struct {
			Nodes []jobs.NodeStatus `json:"nodes"`
			Error string            `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Code, body.Nodes, body.Error
	}
	code, nodes, _ := get("/api/nodes")
	if code != 200 || len(nodes) != 2 || nodes[0].Node != "n1" || nodes[0].Up || nodes[1].Node != "n2" || !nodes[1].Up ||
		nodes[1].Info == nil || len(nodes[1].Info.Stores) != 2 {
		t.Fatalf("GET /api/nodes: %d %+v", code, nodes)
	}
	if code, nodes, _ := get("/api/nodes?node=n2"); code != 200 || len(nodes) != 1 || nodes[0].Node != "n2" {
		t.Fatalf("GET /api/nodes?node=n2: %d %+v", code, nodes)
	}
	if code, _, e := get("/api/nodes?node=zz"); code != 404 || e != "unknown_node" {
		t.Fatalf("GET /api/nodes?node=zz: %d %s, want 404 unknown_node", code, e)
	}
}
