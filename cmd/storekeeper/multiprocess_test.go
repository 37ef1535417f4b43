package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// call asks an API process, with the operator token.
func (p *process) call(t *testing.T, method, path string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+multiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, p.name, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// watch opens a WebSocket on an API process, replaying from since.
func (p *process) watch(t *testing.T, since string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+p.addr+"/ws?since="+since, http.Header{"Authorization": {"Bearer " + multiToken}})
	if err != nil {
		t.Fatalf("watch %s: %v", p.name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const multiToken = "operator-token-for-the-multiprocess-test"

// One real Redis; two API processes and two worker processes with their
// own nodes, stores and directories. Jobs asked of either API run on the
// owning node only; watchers on both APIs see every event of them; a
// third worker with an owned store holds it as lost; a worker killed with
// SIGKILL is reported down exactly once.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs five processes")
	}
	rs := redistest.Start(t, redistest.RequireReal())
	rdb := rs.Client(t)
	ctx := t.Context()
	bin := buildBinary(t)
	dir := t.TempDir()
	workerArgs := func(node, stores string) []string {
		return []string{"worker", "--redis", rs.URL(), "--node", node, "--stores", stores, "--lease-ttl", "3s",
			"--data-dir", filepath.Join(dir, node, "data"), "--backup-dir", filepath.Join(dir, node, "backups"),
			"--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off", "--log-format", "json"}
	}
	owner := map[string]string{"alpha": "n1", "beta": "n1", "gamma": "n2"}
	w1 := startProcess(t, bin, "worker n1", nil, workerArgs("n1", "alpha,beta")...)
	w2 := startProcess(t, bin, "worker n2", nil, workerArgs("n2", "gamma")...)
	apiEnv := []string{"STOREKEEPER_TOKENS=ops:operator:" + multiToken}
	a1 := startProcess(t, bin, "api 1", apiEnv, "api", "--redis", rs.URL(), "--log-format", "json")
	a2 := startProcess(t, bin, "api 2", apiEnv, "api", "--redis", rs.URL(), "--log-format", "json")
	for _, p := range []*process{w1, w2, a1, a2} {
		p.waitReady(t)
	}
	// Both APIs see the three stores, their nodes up and their stats.
	for _, a := range []*process{a1, a2} {
		waitFor(t, 30*time.Second, a.name+" to list every store with its stats", func() bool {
			_, m := a.call(t, "GET", "/api/stores")
			stores, _ := m["stores"].([]any)
			seen := 0
			for _, s := range stores {
				s := s.(map[string]any)
				if owner[s["name"].(string)] == s["node"] && s["node_up"] == true && s["published_at"] != nil {
					seen++
				}
			}
			return seen == len(owner)
		})
	}

	// Watchers on both APIs, replaying from now: none can miss the start.
	since := "0"
	if last, err := rdb.XRevRangeN(ctx, keyspace.EventsStream, "+", "-", 1).Result(); err != nil {
		t.Fatal(err)
	} else if len(last) == 1 {
		since = last[0].ID
	}
	watchers := map[*process]*websocket.Conn{a1: a1.watch(t, since), a2: a2.watch(t, since)}

	// (a) Jobs through either API go to the owning node's queue and run
	// there.
	type asked struct {
		via         *process
		kind, store string
	}
	var ids []string
	for _, j := range []asked{{a1, "backup", "alpha"}, {a1, "verify", "gamma"}, {a2, "backup", "gamma"}, {a2, "compact", "beta"}} {
		code, m := j.via.call(t, "POST", "/api/admin/"+j.kind+"/"+j.store)
		node := owner[j.store]
		if code != 202 || m["node"] != node || m["queue"] != jobs.NodeQueue(node) {
			t.Fatalf("%s %s through %s: %d %v; want node %s, queue %s", j.kind, j.store, j.via.name, code, m, node, jobs.NodeQueue(node))
		}
		ids = append(ids, m["job_id"].(string))
	}
	for _, id := range ids {
		var rec map[string]any
		t.Cleanup(func() {
			if t.Failed() && rec["state"] != string(jobs.StateSucceeded) {
				t.Logf("job %s as last read: %v", id, rec)
			}
		})
		waitFor(t, 30*time.Second, "job "+id+" to succeed", func() bool {
			for _, p := range []*process{w1, w2, a1, a2} {
				p.mustBeRunning(t)
			}
			_, rec = a2.call(t, "GET", "/api/jobs/"+id) // asked of either, read from the other
			if rec["state"] == string(jobs.StateFailed) {
				t.Fatalf("job %s failed: %v", id, rec)
			}
			return rec["state"] == string(jobs.StateSucceeded)
		})
	}
	_, h := a1.call(t, "GET", "/api/history?limit=10")
	ran := map[string]string{}
	for _, e := range h["history"].([]any) {
		e := e.(map[string]any)
		ran[e["job_id"].(string)] = e["node"].(string) + " " + e["store"].(string)
	}
	for _, id := range ids {
		node, store, _ := strings.Cut(ran[id], " ")
		if node != owner[store] {
			t.Errorf("job %s on %s ran on node %q", id, store, node)
		}
	}
	// The stores' files change only on their owner: each store's directory
	// and backups exist under its own node's directories alone.
	for store, node := range owner {
		for _, n := range []string{"n1", "n2"} {
			_, dataErr := os.Stat(filepath.Join(dir, n, "data", store))
			if (dataErr == nil) != (n == node) {
				t.Errorf("store %s owned by %s: data dir under %s: %v", store, node, n, dataErr)
			}
		}
	}
	for store, node := range map[string]string{"alpha": "n1", "gamma": "n2"} {
		for _, n := range []string{"n1", "n2"} {
			entries, _ := os.ReadDir(filepath.Join(dir, n, "backups", store, "backups"))
			if want := map[bool]int{true: 1, false: 0}[n == node]; len(entries) != want {
				t.Errorf("backups of %s under %s: %d, want %d", store, n, len(entries), want)
			}
		}
	}

	// (b) Both watchers see every event of those jobs, in stream order,
	// once: exactly what the events stream holds.
	var truth []string
	stream, err := rdb.XRange(ctx, keyspace.EventsStream, "("+since, "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range stream {
		var e jobs.Event
		_ = json.Unmarshal([]byte(m.Values[keyspace.StreamField].(string)), &e)
		if slices.Contains(ids, e.JobID) {
			truth = append(truth, m.ID+" "+string(e.Type)+" "+e.JobID)
		}
	}
	lastID, _, _ := strings.Cut(truth[len(truth)-1], " ")
	for a, c := range watchers {
		var got []string
		readFrames(t, a.name, c, func(e map[string]any) bool {
			id, _ := e["id"].(string)
			if slices.Contains(ids, fmt.Sprint(e["job_id"])) {
				got = append(got, id+" "+fmt.Sprint(e["type"])+" "+fmt.Sprint(e["job_id"]))
			}
			return id != "" && jobs.CompareStreamIDs(id, lastID) >= 0
		})
		if !slices.Equal(got, truth) {
			t.Errorf("%s's watcher saw\n%s\nthe stream holds\n%s", a.name, strings.Join(got, "\n"), strings.Join(truth, "\n"))
		}
	}

	// (c) A third worker with a store n1 holds starts, but holds that
	// store as lost: store.lost names both nodes, its /readyz is 503 and
	// says which store, and it stops cleanly.
	w3 := startProcess(t, bin, "worker n3", nil, workerArgs("n3", "alpha")...)
	isLost := func(e map[string]any) bool {
		return e["type"] == string(jobs.EventStoreLost) && e["store"] == "alpha" && e["node"] == "n3" && e["holder"] == "n1"
	}
	for a, c := range watchers {
		readFrames(t, a.name, c, isLost)
	}
	base := listening(t, w3.logs.String, func() bool { return false })
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if lost, _ := ready["lost_stores"].(map[string]any); resp.StatusCode != http.StatusServiceUnavailable || lost["alpha"] != "n1" {
		t.Errorf("the third worker's /readyz: %d %v; want 503 naming alpha held by n1", resp.StatusCode, ready)
	}
	w3.stop(t)
	if l, _ := rdb.Get(ctx, keyspace.LeaseKey("alpha")).Result(); !strings.Contains(l, `"node":"n1"`) {
		t.Errorf("alpha's lease after the refused claim: %s", l)
	}

	// (d) SIGKILL n2: its heartbeat expires within the 3 s lease, and
	// node.down comes once, however many processes (n1 every second, both
	// APIs every 5 s) notice it.
	if err := w2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-w2.exited
	killed := time.Now()
	isDown := func(e map[string]any) bool { return e["type"] == string(jobs.EventNodeDown) && e["node"] == "n2" }
	for a, c := range watchers {
		readFrames(t, a.name, c, isDown)
	}
	t.Logf("node.down %s after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	// Absence takes a period: long enough for every checker to have run
	// again (the APIs' period is 5 s), read on both watchers.
	window := time.Now().Add(6 * time.Second)
	for a, c := range watchers {
		more := 0
		_ = c.SetReadDeadline(window)
		for {
			var e map[string]any
			if err := c.ReadJSON(&e); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("%s's watcher: %v", a.name, err)
				}
				break
			}
			if isDown(e) {
				more++
			}
		}
		if more != 0 {
			t.Errorf("%s's watcher saw %d more node.down for n2", a.name, more)
		}
	}
	if n := countEvents(t, rdb, since, isDown); n != 1 {
		t.Errorf("%d node.down for n2 in the events stream, want 1", n)
	}
	if _, m := a1.call(t, "GET", "/api/stores/gamma"); m["node_up"] != false {
		t.Errorf("gamma after its node died: %v", m)
	}
}

// readFrames reads a watcher's frames until until says so, failing after
// 30 s without it.
func readFrames(t *testing.T, name string, c *websocket.Conn, until func(map[string]any) bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var e map[string]any
		if err := c.ReadJSON(&e); err != nil {
			t.Fatalf("%s's watcher: %v", name, err)
		}
		if e["type"] == "stream.dropped" || e["type"] == "stream.gap" {
			t.Fatalf("%s's watcher: %v", name, e)
		}
		if until(e) {
			return
		}
	}
}

// countEvents counts the events after since that match.
func countEvents(t *testing.T, rdb *redis.Client, since string, match func(map[string]any) bool) int {
	t.Helper()
	stream, err := rdb.XRange(t.Context(), keyspace.EventsStream, "("+since, "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range stream {
		var e map[string]any
		_ = json.Unmarshal([]byte(m.Values[keyspace.StreamField].(string)), &e)
		if match(e) {
			n++
		}
	}
	return n
}
