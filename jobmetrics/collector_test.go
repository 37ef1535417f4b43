package jobmetrics

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// series gathers c and returns its exposition's sample lines, sorted.
func series(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("gather: %d %s", rec.Code, rec.Body)
	}
	var out []string
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// Two nodes' stores and jobs in Redis, and a third node that is down: the
// cluster view has them all, a node's view only itself, its own stores and
// the jobs it ran.
func TestCollectorScopes(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	now := time.Now().UTC()
	for _, h := range []jobs.HistoryEntry{
		{JobID: "j1", Kind: jobs.KindCompact, Store: "orders", Status: jobs.StatusCompacted, Node: "n1", DurationMS: 1500, BytesBefore: 1000, BytesAfter: 400, At: now},
		{JobID: "j2", Kind: jobs.KindBackup, Store: "orders", Status: jobs.StatusBackedUp, Node: "n1", DurationMS: 20, At: now},
		{JobID: "j3", Kind: jobs.KindCompact, Store: "users", Status: jobs.StatusFailed, Node: "n2", DurationMS: 5, At: now},
	} {
		if _, err := jobsdb.Append(ctx, rdb, keyspace.HistoryStream, 1000, h); err != nil {
			t.Fatal(err)
		}
	}
	rdb.HSet(ctx, keyspace.StoresKey, "orders", "n1", "users", "n2")
	for node, stores := range map[string][]string{"n1": {"orders"}, "n2": {"users"}} {
		if err := jobsdb.NodeUp(ctx, rdb, jobs.NodeInfo{Node: node, Stores: stores, At: now}, time.Minute, 1000); err != nil {
			t.Fatal(err)
		}
	}
	rdb.Set(ctx, keyspace.StatsKey("orders"), `{"node":"n1","stats":{"state":"open","disk_bytes":4096},"backups":[{"id":"b2","created_at":"`+
		now.Add(-time.Hour).Format(time.RFC3339)+`","bad":true},{"id":"b1","created_at":"`+now.Add(-2*time.Hour).Format(time.RFC3339)+`"}]}`, 0)
	rdb.Set(ctx, keyspace.StatsKey("users"), `{"node":"n2","stats":{"state":"corrupt","disk_bytes":10}}`, 0)
	rdb.SAdd(ctx, keyspace.NodesKey, "n3") // known, heartbeat expired

	cluster, err := New(Config{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	n1, err := New(Config{Redis: rdb, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	got := series(t, cluster)
	for _, want := range []string{
		`storekeeper_jobs_finished{kind="compact",status="compacted"} 1`,
		`storekeeper_jobs_finished{kind="compact",status="failed"} 1`,
		`storekeeper_jobs_finished{kind="backup",status="backed_up"} 1`,
		`storekeeper_job_duration_seconds_count{kind="compact"} 2`,
		`storekeeper_compaction_reclaimed_bytes{store="orders"} 600`,
		`storekeeper_store_disk_bytes{node="n1",store="orders"} 4096`,
		`storekeeper_store_disk_bytes{node="n2",store="users"} 10`,
		`storekeeper_store_healthy{node="n1",store="orders"} 1`,
		`storekeeper_store_healthy{node="n2",store="users"} 0`,
		`storekeeper_store_state{node="n1",state="open",store="orders"} 1`,
		`storekeeper_store_state{node="n1",state="corrupt",store="orders"} 0`,
		`storekeeper_store_state{node="n2",state="corrupt",store="users"} 1`,
		`storekeeper_store_state{node="n2",state="open",store="users"} 0`,
		`storekeeper_node_up{node="n1"} 1`,
		`storekeeper_node_up{node="n2"} 1`,
		`storekeeper_node_up{node="n3"} 0`,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("cluster: no %s in\n%s", want, strings.Join(got, "\n"))
		}
	}
	got = series(t, n1)
	for _, s := range got {
		if strings.Contains(s, `"users"`) || strings.Contains(s, `status="failed"`) || strings.Contains(s, `node="n2"`) || strings.Contains(s, `node="n3"`) {
			t.Errorf("node n1 reports another node's store or job: %s", s)
		}
	}
	for _, want := range []string{
		`storekeeper_jobs_finished{kind="compact",status="compacted"} 1`,
		`storekeeper_job_duration_seconds_count{kind="compact"} 1`,
		`storekeeper_store_disk_bytes{node="n1",store="orders"} 4096`,
		`storekeeper_node_up{node="n1"} 1`,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("n1: no %s in\n%s", want, strings.Join(got, "\n"))
		}
	}
	// The backup age is the newest good backup's (b1, two hours), not the
	// bad one's.
	ages := 0
	for _, s := range got {
		if v, ok := strings.CutPrefix(s, `storekeeper_backup_age_seconds{store="orders"} `); ok {
			ages++
			var age float64
			_ = json.Unmarshal([]byte(v), &age)
			if age < 7100 || age > 7300 {
				t.Errorf("backup age %v, want about 7200", age)
			}
		}
	}
	if ages != 1 {
		t.Errorf("%d backup ages for orders in\n%s", ages, strings.Join(got, "\n"))
	}
	if _, err := New(Config{Redis: rdb, Node: "bad node"}); err == nil {
		t.Error("a bad node name was accepted")
	}
}

// The package imports only jobs and jobsdb of storekeeper's packages, and api, which
// uses it, still reaches neither store nor worker.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "storekeeper/jobmetrics", "storekeeper/api").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "storekeeper/store" || p == "storekeeper/worker" {
			t.Errorf("storekeeper/api or storekeeper/jobmetrics depends on %s", p)
		}
	}
	direct, err := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, "storekeeper/jobmetrics").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(direct)) {
		if strings.HasPrefix(p, "storekeeper/") && p != "storekeeper/jobs" && p != "storekeeper/jobsdb" {
			t.Errorf("jobmetrics imports %s", p)
		}
	}
}

// Above Config.StoreSeries stores, no per-store series is exported and
// the aggregates say the same: stores per node and state, unhealthy,
// disk, the oldest backup, stores without one, each target's worst lag
// and failing stores, the worst drill, the oldest restorable point. At
// or below it, both are.
func TestCollectorAggregatesAboveStoreSeries(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	now := time.Now().UTC()
	rdb.HSet(ctx, keyspace.StoresKey, "a", "n1", "b", "n1", "c", "n2", "d", "n2")
	for node, stores := range map[string][]string{"n1": {"a", "b"}, "n2": {"c", "d"}} {
		if err := jobsdb.NodeUp(ctx, rdb, jobs.NodeInfo{Node: node, Stores: stores, At: now}, time.Minute, 1000); err != nil {
			t.Fatal(err)
		}
	}
	lag := 3 * time.Second
	publish := func(store string, st jobs.StoreStatus) {
		raw, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		rdb.Set(ctx, keyspace.StatsKey(store), raw, 0)
	}
	publish("a", jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{State: jobs.StoreOpen, DiskBytes: 100},
		Backups: []jobs.BackupSummary{{ID: "a1", CreatedAt: now.Add(-time.Hour)}},
		Targets: []jobs.TargetStatus{{Target: "vault", BackupAt: now.Add(-2 * time.Hour), ShipLag: &lag}},
		Drill:   &jobs.DrillStatus{Target: "vault", OK: true, RTO: 40 * time.Second, Restorable: now.Add(-5 * time.Hour)}})
	publish("b", jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{State: jobs.StoreOpen, DiskBytes: 20},
		Backups: []jobs.BackupSummary{{ID: "b1", CreatedAt: now.Add(-3 * time.Hour)}},
		Targets: []jobs.TargetStatus{{Target: "vault", BackupAt: now.Add(-time.Hour), FailingSince: now}},
		Drill:   &jobs.DrillStatus{Target: "vault", OK: false, Restorable: now.Add(-time.Hour)}, ShipGaps: 2})
	publish("c", jobs.StoreStatus{Node: "n2", Stats: jobs.StoreStats{State: jobs.StoreCorrupt, DiskBytes: 7}})
	// d: nothing published yet

	for _, tc := range []struct {
		max      int
		perStore bool
	}{{3, false}, {-1, false}, {4, true}} {
		c, err := New(Config{Redis: rdb, StoreSeries: tc.max, MaxAge: -1})
		if err != nil {
			t.Fatal(err)
		}
		got := series(t, c)
		perStore := slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, `store="`) })
		if perStore != tc.perStore {
			t.Errorf("StoreSeries %d, 4 stores: per-store series %v, want %v:\n%s", tc.max, perStore, tc.perStore, strings.Join(got, "\n"))
		}
		want := []string{
			`storekeeper_stores{node="n1",state="open"} 2`,
			`storekeeper_stores{node="n2",state="corrupt"} 1`,
			`storekeeper_stores{node="n2",state="unknown"} 1`,
			`storekeeper_stores_unhealthy{node="n1"} 0`,
			`storekeeper_stores_unhealthy{node="n2"} 2`,
			`storekeeper_stores_disk_bytes{node="n1"} 120`,
			`storekeeper_stores_without_backup 2`,
			`storekeeper_backup_target_failing_stores{target="vault"} 1`,
			`storekeeper_ship_lag_seconds_max{target="vault"} 3`,
			`storekeeper_ship_gaps_all_total 2`,
			`storekeeper_drill_duration_seconds_max{target="vault"} 40`,
			`storekeeper_drill_failed_stores{target="vault"} 1`,
			fmt.Sprintf(`storekeeper_last_restorable_timestamp_seconds_min %g`, float64(now.Add(-5*time.Hour).UnixMilli())/1000),
			fmt.Sprintf(`storekeeper_store_series %d`, map[bool]int{false: 0, true: 1}[tc.perStore]),
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("StoreSeries %d: no %s in\n%s", tc.max, w, strings.Join(got, "\n"))
			}
		}
		for name, around := range map[string]float64{"storekeeper_backup_age_seconds_max": 3 * 3600, `storekeeper_backup_target_lag_seconds_max{target="vault"}`: 2 * 3600} {
			i := slices.IndexFunc(got, func(s string) bool { return strings.HasPrefix(s, name+" ") })
			var v float64
			if i >= 0 {
				_, _ = fmt.Sscan(strings.TrimPrefix(got[i], name+" "), &v)
			}
			if v < around-60 || v > around+60 {
				t.Errorf("StoreSeries %d: %s = %v, want about %v", tc.max, name, v, around)
			}
		}
	}
}
