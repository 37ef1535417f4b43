package jobmetrics

import (
	"encoding/json"
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
