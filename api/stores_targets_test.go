package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// A store's view carries its copies on the backup targets as its owner
// published them, and a target whose uploads fail is a health condition.
func TestStoreViewShowsTargets(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	at := time.Now().UTC().Add(-time.Hour)
	st := jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}, At: at,
		Targets: []jobs.TargetStatus{
			{Target: "vault", BackupID: "20261204T000000.000Z-000001", BackupAt: at},
			{Target: "s3", Error: "connection refused", FailingSince: at},
		}}
	publishStatus(t, rdb, st)
	req := httptest.NewRequest("GET", "/api/stores/orders", nil)
	req.Header.Set("Authorization", "Bearer "+secOperator)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	var v jobs.StoreView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if len(v.Targets) != 2 || v.Targets[0].BackupID == "" || v.Targets[1].FailingSince.IsZero() {
		t.Fatalf("targets %+v", v.Targets)
	}
	var failing []string
	for _, c := range v.Health {
		if c.Kind == "backup_target_failing" {
			failing = append(failing, c.Message)
		}
	}
	if len(failing) != 1 || !strings.Contains(failing[0], "s3") || !strings.Contains(failing[0], "connection refused") {
		t.Fatalf("health %+v; want one backup_target_failing naming s3 and its error", v.Health)
	}
}

// publishStatus makes st's node the owner of the store st names and
// publishes st as its status, as a worker's heartbeat does.
func publishStatus(t *testing.T, rdb redis.UniversalClient, st jobs.StoreStatus) {
	t.Helper()
	b, _ := json.Marshal(st)
	if err := rdb.HSet(t.Context(), keyspace.StoresKey, st.Stats.Name, st.Node).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(t.Context(), keyspace.StatsKey(st.Stats.Name), b, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// A store's view carries its last drill; a failed drill, a restorable
// point older than --rpo and a drill slower than --rto are health
// conditions. A drill naming a target the store's node does not publish
// is refused (404 unknown_target) without a job; one naming a target it
// does is accepted.
func TestStoreViewShowsDrillsAndDrillTargets(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, func(c *Config) { c.RPO, c.RTO = time.Hour, time.Minute })
	now := time.Now().UTC()
	st := jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}, At: now,
		Targets: []jobs.TargetStatus{{Target: "vault"}},
		Drill: &jobs.DrillStatus{JobID: "j1", At: now, Target: "vault", BackupAt: now.Add(-3 * time.Hour), OK: true,
			RTO: 2 * time.Minute, Restorable: now.Add(-3 * time.Hour)}}
	publishStatus(t, rdb, st)
	do := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secOperator)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	kinds := func() map[string]string {
		rec := do("GET", "/api/stores/orders", "")
		var v jobs.StoreView
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.Drill == nil {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		out := map[string]string{}
		for _, c := range v.Health {
			out[c.Kind] = c.Message
		}
		return out
	}
	h := kinds()
	if h["rpo_exceeded"] == "" || h["rto_exceeded"] == "" || h["drill_failed"] != "" {
		t.Fatalf("health %+v; want rpo and rto exceeded, no failed drill", h)
	}
	st.Drill.OK, st.Drill.Error = false, "bad backup: 000005.sst has 10 bytes"
	publishStatus(t, rdb, st)
	if h := kinds(); !strings.Contains(h["drill_failed"], "000005.sst") || h["rto_exceeded"] != "" {
		t.Fatalf("health %+v; want the failed drill, naming its error", h)
	}

	if rec := do("POST", "/api/admin/drill/orders", `{"target":"elsewhere"}`); rec.Code != 404 || !strings.Contains(rec.Body.String(), "unknown_target") {
		t.Fatalf("drill from an unknown target: %d %s", rec.Code, rec.Body)
	}
	if rec := do("POST", "/api/admin/drill/orders", `{"target":"../x"}`); rec.Code != 400 {
		t.Fatalf("drill from a malformed target: %d %s", rec.Code, rec.Body)
	}
	if rec := do("POST", "/api/admin/drill/orders", `{"target":"vault"}`); rec.Code != 202 {
		t.Fatalf("drill from vault: %d %s", rec.Code, rec.Body)
	}
}
