package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"storekeeper/internal/redistest"
	"storekeeper/internal/syncbuf"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// startInProcess runs storekeeper with args in this process until the test
// ends, waits for its /readyz and returns the address it listens on.
func startInProcess(t *testing.T, args ...string) (addr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	stderr := &syncbuf.Buffer{}
	go func() { done <- run(ctx, append(args, "--listen", listenAddr), io.Discard, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("%v: no exit 30 s after cancel", args[:1])
		}
	})
	stopped := exited(t, done, args[0])
	base := listening(t, stderr.String, stopped)
	waitReady(t, http.DefaultClient, base, stopped, stderr.String)
	return strings.TrimPrefix(base, "http://")
}

// scrapeSeries parses addr's /metrics; the parser refuses a family given twice.
func scrapeSeries(t *testing.T, addr string) map[string][]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics of %s does not parse: %v", addr, err)
	}
	// name -> each series' labels, as "k=v,…"
	out := map[string][]string{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[name] = append(out[name], strings.Join(ls, ","))
		}
	}
	return out
}

// A worker-only process exports its own node's job and store metrics
// (and not another node's); serve exports each metric once, for the
// cluster.
func TestWorkerMetrics(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	dir := t.TempDir()
	common := []string{"--redis", rs.URL(), "--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off", "--lease-ttl", "3s"}
	waddr := startInProcess(t, append([]string{"worker", "--node", "wm", "--stores", "orders",
		"--data-dir", filepath.Join(dir, "wdata"), "--backup-dir", filepath.Join(dir, "wbackups")}, common...)...)
	saddr := startInProcess(t, append([]string{"serve", "--node", "sv", "--stores", "sales", "--tokens", "ops:operator:operator-token-0123456789",
		"--data-dir", filepath.Join(dir, "sdata"), "--backup-dir", filepath.Join(dir, "sbackups")}, common...)...)

	client := jobsdb.NewClient(rdb, jobs.ClientConfig{})
	var ids []string
	for _, req := range []jobs.Request{
		{Kind: jobs.KindCompact, Store: "orders", Params: jobs.Params{Force: true}},
		{Kind: jobs.KindBackup, Store: "orders"},
		{Kind: jobs.KindBackup, Store: "sales"},
	} {
		req.Trigger, req.Actor = jobs.TriggerManual, "test"
		res, err := client.Enqueue(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Record.ID)
	}
	for _, id := range ids {
		waitFor(t, 30*time.Second, "job "+id+" succeeded", func() bool {
			r, err := client.Get(t.Context(), id)
			return err == nil && r.State == jobs.StateSucceeded
		})
	}

	w := scrapeSeries(t, waddr)
	for name, want := range map[string]string{
		"storekeeper_jobs_finished":        "kind=compact", // skipped: the store is empty
		"storekeeper_job_duration_seconds": "kind=backup",
		"storekeeper_store_disk_bytes":     "node=wm,store=orders",
		"storekeeper_store_healthy":        "node=wm,store=orders",
		"storekeeper_backup_age_seconds":   "store=orders",
	} {
		if !hasSeries(w[name], want) {
			t.Errorf("worker /metrics: no %s{%s}; has %v", name, want, w[name])
		}
	}
	for name, series := range w {
		for _, s := range series {
			if strings.Contains(s, "sales") || strings.Contains(s, "node=sv") {
				t.Errorf("worker /metrics reports another node's %s{%s}", name, s)
			}
		}
	}
	// In jobs_finished, the worker counts only the jobs it ran: its
	// backup, not serve's.
	if n := len(w["storekeeper_jobs_finished"]); n != 2 {
		t.Errorf("worker jobs_finished series %v, want compact and backup of its own", w["storekeeper_jobs_finished"])
	}

	s := scrapeSeries(t, saddr)
	for _, st := range []string{"node=sv,store=sales", "node=wm,store=orders"} {
		if n := countSeries(s["storekeeper_store_disk_bytes"], st); n != 1 {
			t.Errorf("serve /metrics: %d storekeeper_store_disk_bytes{%s}, want 1 (%v)", n, st, s["storekeeper_store_disk_bytes"])
		}
	}
	if _, ok := s["storekeeper_ws_watchers"]; !ok {
		t.Error("serve /metrics has no API metrics")
	}
}

func hasSeries(series []string, want string) bool { return countSeries(series, want) > 0 }

// countSeries is how many series have every label of want ("k=v,…").
func countSeries(series []string, want string) int {
	n := 0
	for _, s := range series {
		ok := true
		for _, kv := range strings.Split(want, ",") {
			if kv != "" && !strings.Contains(","+s+",", ","+kv+",") {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}
