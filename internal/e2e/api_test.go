// Package e2e tests the API against a real Redis and the real worker. It
// lives apart from package api, which must not import store or worker.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"storekeeper/api"
	"storekeeper/internal/keyspace"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/store"
	"storekeeper/worker"
)

const (
	viewerToken   = "viewer-token-0123456789"
	operatorToken = "operator-token-0123456789"
)

type env struct {
	t     testing.TB
	redis *redistest.Server
	rdb   *redis.Client
	reg   *store.Registry
	w     *worker.Worker
	api   *api.Server
	srv   *httptest.Server
}

func setup(t *testing.T) *env { return setupTB(t) }

func setupFuzz(f *testing.F) *env { return setupTB(f) }

func setupTB(t testing.TB, tweak ...func(*api.Config)) *env {
	t.Helper()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	root := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: filepath.Join(root, "data"), BackupDir: filepath.Join(root, "backups"),
		Stores: []string{"orders", "users"}, NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Registry: reg, Node: "n1", TaskCheckInterval: 10 * time.Millisecond,
		RetryDelay: func(int) time.Duration { return 10 * time.Millisecond }, Logger: slog.New(slog.DiscardHandler),
		Schedules: map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	tokens, _ := api.ParseTokens("ann:viewer:" + viewerToken + ",ops:operator:" + operatorToken)
	acfg := api.Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range tweak {
		f(&acfg)
	}
	a, err := api.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Start(t.Context())
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() { srv.Close(); a.Close(); w.Shutdown(); reg.Close() })
	e := &env{t: t, redis: rs, rdb: rdb, reg: reg, w: w, api: a, srv: srv}
	e.waitStats("orders")
	return e
}

// waitStats waits for the worker's heartbeat to publish a store.
func (e *env) waitStats(name string) {
	e.t.Helper()
	testsignal.WaitFor(e.t, "stats published for "+name, func() bool {
		n, _ := e.rdb.Exists(e.t.Context(), keyspace.StatsKey(name)).Result()
		return n == 1
	})
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (e *env) do(method, path, token string, body any) answer {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// No answer within testsignal.Timeout fails the test: a request that
	// waits on something that never comes must not hang the suite.
	resp, err := (&http.Client{Timeout: testsignal.Timeout}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &a.body)
	if resp.Header.Get("X-Request-Id") == "" {
		e.t.Errorf("%s %s: no request id", method, path)
	}
	return a
}

func (e *env) waitJob(id string, state jobs.State) map[string]any {
	e.t.Helper()
	var a answer
	if !testsignal.Poll(testsignal.Timeout, func() bool {
		a = e.do("GET", "/api/jobs/"+id, viewerToken, nil)
		return a.status == 200 && a.body["state"] == string(state)
	}) {
		e.t.Fatalf("job %s: %s", id, a.raw)
	}
	return a.body
}

// Every route × {no token, viewer, operator}: 401 without a token, 403 for
// a viewer on an operator route, served otherwise.
func TestRoutesAndRoles(t *testing.T) {
	e := setup(t)
	backup := e.do("POST", "/api/admin/backup/orders", operatorToken, nil)
	e.waitJob(backup.body["job_id"].(string), jobs.StateSucceeded)
	done := e.do("POST", "/api/admin/verify/users", operatorToken, nil)
	e.waitJob(done.body["job_id"].(string), jobs.StateSucceeded)
	pending := e.do("POST", "/api/admin/compact/users", operatorToken, map[string]bool{"dry_run": true})
	for _, r := range []struct {
		method, path string
		body         any
		operator     bool
		ok           int
	}{
		{"POST", "/api/admin/compact", map[string]bool{"dry_run": true}, true, 202},
		{"POST", "/api/admin/compact/orders", map[string]bool{"force": true}, true, 202},
		{"POST", "/api/admin/backup", nil, true, 202},
		{"POST", "/api/admin/backup/orders", nil, true, 202},
		{"POST", "/api/admin/verify", map[string]bool{"deep": true}, true, 202},
		{"POST", "/api/admin/verify/orders", nil, true, 202},
		{"POST", "/api/admin/restore/orders", nil, true, 202},
		{"GET", "/api/jobs", nil, false, 200},
		{"GET", "/api/jobs/" + done.body["job_id"].(string), nil, false, 200},
		{"DELETE", "/api/jobs/" + pending.body["job_id"].(string), nil, true, 0}, // 200, or 409 if it finished first
		{"GET", "/api/history?limit=10", nil, false, 200},
		{"GET", "/api/stores", nil, false, 200},
		{"GET", "/api/stores/orders", nil, false, 200},
		{"GET", "/api/stores/orders/backups", nil, false, 200},
		{"POST", "/api/stores/users/pause", nil, true, 200},
		{"POST", "/api/stores/users/resume", nil, true, 200},
		{"GET", "/api/schedules", nil, false, 200},
		{"GET", "/api/nodes", nil, false, 200},
		{"GET", "/api/dashboard", nil, false, 200},
		{"GET", "/monitoring/", nil, true, 200},
	} {
		name := r.method + " " + r.path
		if a := e.do(r.method, r.path, "", r.body); a.status != 401 || a.body["error"] != "unauthorized" {
			t.Errorf("%s without a token: %d %s", name, a.status, a.raw)
		}
		if a := e.do(r.method, r.path, "wrong-token-0123456789", r.body); a.status != 401 {
			t.Errorf("%s with a wrong token: %d", name, a.status)
		}
		a := e.do(r.method, r.path, viewerToken, r.body)
		switch {
		case r.operator && (a.status != 403 || a.body["error"] != "forbidden"):
			t.Errorf("%s as viewer: %d %s", name, a.status, a.raw)
		case !r.operator && a.status != r.ok:
			t.Errorf("%s as viewer: %d %s", name, a.status, a.raw)
		}
		if r.operator {
			a = e.do(r.method, r.path, operatorToken, r.body)
			if r.ok != 0 && a.status != r.ok || r.ok == 0 && a.status != 200 && a.status != 409 {
				t.Errorf("%s as operator: %d %s", name, a.status, a.raw)
			}
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/openapi.json"} {
		if a := e.do("GET", p, "", nil); a.status != 200 {
			t.Errorf("GET %s: %d %s", p, a.status, a.raw)
		}
	}
}

// Every error of the contract, as JSON {error, message}.
func TestErrors(t *testing.T) {
	e := setup(t)
	op := operatorToken
	backup := e.do("POST", "/api/admin/backup/orders", op, nil)
	e.waitJob(backup.body["job_id"].(string), jobs.StateSucceeded)
	finished := backup.body["job_id"].(string)
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/api/admin/compact/orders", "{not json", 400, "invalid_request"},
		{"POST", "/api/admin/compact/orders", `{"force": true, "color": "red"}`, 400, "invalid_request"},
		{"POST", "/api/admin/compact/orders", `{"force": "yes"}`, 400, "invalid_request"},
		{"POST", "/api/admin/compact/orders", `{} {}`, 400, "invalid_request"},
		{"POST", "/api/admin/backup/orders", `{"deep": true}`, 400, "invalid_request"},
		{"POST", "/api/admin/compact/orders", strings.Repeat(" ", api.MaxBody+1), 413, "body_too_large"},
		{"GET", "/api/history?limit=0", nil, 400, "invalid_request"},
		{"GET", "/api/history?limit=abc", nil, 400, "invalid_request"},
		{"GET", "/api/history?before=yesterday", nil, 400, "bad_cursor"},
		{"GET", "/api/history?kind=defrag", nil, 400, "invalid_request"},
		{"GET", "/api/jobs?state=sleeping", nil, 400, "invalid_request"},
		{"POST", "/api/admin/compact/nosuch", nil, 404, "unknown_store"},
		{"POST", "/api/admin/compact/Bad..Name", nil, 404, "unknown_store"},
		{"GET", "/api/stores/nosuch", nil, 404, "unknown_store"},
		{"POST", "/api/stores/nosuch/pause", nil, 404, "unknown_store"},
		{"GET", "/api/jobs/jnope", nil, 404, "unknown_job"},
		{"DELETE", "/api/jobs/jnope", nil, 404, "unknown_job"},
		{"GET", "/api/nothing-here", nil, 404, "not_found"},
		{"PUT", "/api/stores", nil, 405, "method_not_allowed"},
		{"POST", "/api/admin/restore/orders", `{"backup_id": "20200101T000000.000Z-000000"}`, 404, "unknown_backup"},
		{"POST", "/api/admin/restore/users", nil, 409, "no_backup"},
		{"DELETE", "/api/jobs/" + finished, nil, 409, "job_finished"},
	} {
		a := e.do(c.method, c.path, op, c.body)
		if a.status != c.status || a.body["error"] != c.code || a.body["message"] == "" {
			t.Errorf("%s %s %v: %d %s, want %d %s", c.method, c.path, c.body, a.status, a.raw, c.status, c.code)
		}
		if bytes.Contains(a.raw, []byte("goroutine")) || bytes.Contains(a.raw, []byte(".go:")) {
			t.Errorf("%s %s leaks internals: %s", c.method, c.path, a.raw)
		}
	}
	// A restore of another backup while one is pending: 409.
	e.w.Shutdown() // nothing runs: the first restore stays pending
	first := e.do("POST", "/api/admin/restore/orders", op, nil)
	if first.status != 202 {
		t.Fatalf("restore: %d %s", first.status, first.raw)
	}
	backups := e.do("GET", "/api/stores/orders/backups", op, nil)
	id := backups.body["backups"].([]any)[0].(map[string]any)["id"].(string)
	if a := e.do("POST", "/api/admin/restore/orders", op, map[string]string{"backup_id": id}); a.status != 409 || a.body["error"] != "restore_in_progress" {
		t.Fatalf("second restore: %d %s", a.status, a.raw)
	}
	// The same request again is the same job.
	if a := e.do("POST", "/api/admin/restore/orders", op, nil); a.status != 202 || a.body["deduplicated"] != true || a.body["job_id"] != first.body["job_id"] {
		t.Fatalf("repeated restore: %d %s", a.status, a.raw)
	}
	// Redis gone: 503, and /readyz says so.
	e.redis.Stop()
	if a := e.do("GET", "/api/jobs/"+finished, op, nil); a.status != 503 || a.body["error"] != "redis_unavailable" {
		t.Fatalf("Redis down: %d %s", a.status, a.raw)
	}
	if a := e.do("POST", "/api/admin/compact/orders", op, nil); a.status != 503 || a.body["error"] != "redis_unavailable" {
		t.Fatalf("Redis down, enqueue: %d %s", a.status, a.raw)
	}
	if a := e.do("GET", "/readyz", "", nil); a.status != 503 {
		t.Fatalf("readyz with Redis down: %d %s", a.status, a.raw)
	}
}

// An enqueue answers 202 with Location; a batch is one job per store; the
// actor is the token's name.
func TestEnqueueAndBatch(t *testing.T) {
	e := setup(t)
	a := e.do("POST", "/api/admin/compact/orders", operatorToken, nil)
	if a.status != 202 || a.header.Get("Location") != "/api/jobs/"+a.body["job_id"].(string) || a.body["actor"] != "ops" || a.body["deduplicated"] != false {
		t.Fatalf("enqueue: %d %v %s", a.status, a.header, a.raw)
	}
	job := e.waitJob(a.body["job_id"].(string), jobs.StateSucceeded)
	if _, ok := job["attempts"].(float64); !ok {
		t.Fatalf("attempts is not a JSON number: %v", job)
	}
	b := e.do("POST", "/api/admin/verify", operatorToken, nil)
	batch, _ := b.body["batch_id"].(string)
	if b.status != 202 || batch == "" || len(b.body["jobs"].([]any)) != 2 {
		t.Fatalf("batch: %d %s", b.status, b.raw)
	}
	l := e.do("GET", "/api/jobs?batch="+batch, viewerToken, nil)
	if got := l.body["jobs"].([]any); len(got) != 2 {
		t.Fatalf("batch jobs: %s", l.raw)
	}
	for _, j := range b.body["jobs"].([]any) {
		e.waitJob(j.(map[string]any)["job_id"].(string), jobs.StateSucceeded)
	}
	h := e.do("GET", "/api/history?kind=verify&limit=5", viewerToken, nil)
	if got := h.body["history"].([]any); len(got) != 2 {
		t.Fatalf("history: %s", h.raw)
	}
	d := e.do("GET", "/api/dashboard", viewerToken, nil)
	for _, k := range []string{"stores", "history", "queues", "schedules", "nodes", "health"} {
		if _, ok := d.body[k]; !ok {
			t.Fatalf("dashboard has no %s: %s", k, d.raw)
		}
	}
}

// The documented routes are the registered ones, with body schemas that
// hold for the live answers (openapi_test.go); /metrics parses.
func TestOpenAPIAndMetrics(t *testing.T) {
	e := setup(t)
	doc := e.do("GET", "/api/openapi.json", "", nil)
	paths := doc.body["paths"].(map[string]any)
	var documented []string
	for p, ops := range paths {
		for m := range ops.(map[string]any) {
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	registered := api.Routes(e.api)
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		t.Fatalf("documented %v\nregistered %v", documented, registered)
	}
	checkOpenAPIDoc(t, e, doc.raw)
	e.do("POST", "/api/admin/compact/orders", operatorToken, nil)
	m := e.do("GET", "/metrics", "", nil)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(m.raw))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	for _, want := range []string{"storekeeper_api_requests_total", "storekeeper_api_enqueues_total", "storekeeper_ws_watchers",
		"storekeeper_store_disk_bytes", "asynq_tasks_enqueued_total"} {
		if _, ok := families[want]; !ok {
			t.Errorf("no %s in /metrics", want)
		}
	}
}

func dial(t *testing.T, e *env, query string, header http.Header) (*websocket.Conn, *http.Response, error) {
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/ws?" + query
	return websocket.DefaultDialer.Dial(url, header)
}

func readEvent(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m map[string]any
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("websocket read: %v", err)
	}
	return m
}

// Watchers: filters, since replay across a reconnect with no gap and no
// duplicate, auth and origin refusal, a CLI client with no Origin.
func TestWebSocket(t *testing.T) {
	e := setup(t)
	auth := http.Header{"Authorization": {"Bearer " + viewerToken}}
	if _, resp, err := dial(t, e, "", nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("no token: %v %v", resp, err)
	}
	if _, resp, err := dial(t, e, "", http.Header{"Authorization": {"Bearer " + viewerToken}, "Origin": {"https://evil.example"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	c, _, err := dial(t, e, "store=orders&token="+viewerToken, nil) // token by query, no Origin: a CLI
	if err != nil {
		t.Fatal(err)
	}
	if before := pushtest.WaitLive(t, c); len(before) != 0 { // subscribed: nothing to replay, so it comes first
		t.Fatalf("frames before stream.live with no since: %v", before)
	}
	e.do("POST", "/api/admin/verify/users", operatorToken, nil)
	first := e.do("POST", "/api/admin/verify/orders", operatorToken, nil)
	id := first.body["job_id"].(string)
	var seen []string
	for {
		m := readEvent(t, c)
		if m["store"] != "orders" {
			t.Fatalf("filter let through %v", m)
		}
		seen = append(seen, m["id"].(string))
		if m["type"] == "job.succeeded" && m["job_id"] == id {
			break
		}
	}
	last := seen[len(seen)-1]
	c.Close()

	// Missed while away: replayed on reconnect, then live, in order, once.
	missed := e.do("POST", "/api/admin/compact/orders", operatorToken, nil)
	e.waitJob(missed.body["job_id"].(string), jobs.StateSucceeded)
	c, _, err = dial(t, e, "store=orders&since="+last, auth)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	live := e.do("POST", "/api/admin/backup/orders", operatorToken, nil) // during the replay, or after
	var ids []string
	var types []string
	lives := 0
	for {
		m := readEvent(t, c)
		if m["type"] == "stream.live" {
			// Once, after the whole replay: every event of the missed job
			// (appended before this connection) came before it.
			if lives++; lives > 1 || !slices.Contains(types, "true job.succeeded") {
				t.Fatalf("stream.live number %d after %v", lives, types)
			}
			continue
		}
		ids = append(ids, m["id"].(string))
		types = append(types, fmt.Sprintf("%v %v", m["job_id"] == missed.body["job_id"], m["type"]))
		if m["type"] == "job.succeeded" && m["job_id"] == live.body["job_id"] {
			break
		}
	}
	if lives != 1 {
		t.Fatalf("%d stream.live frames; want 1: %v", lives, types)
	}
	for i := range ids {
		if jobs.CompareStreamIDs(ids[i], last) <= 0 || i > 0 && jobs.CompareStreamIDs(ids[i], ids[i-1]) <= 0 {
			t.Fatalf("replay out of order or duplicated: %v (last before reconnect %s)", ids, last)
		}
	}
	if types[0] != "true job.enqueued" {
		t.Fatalf("replay did not start with the missed job: %v", types)
	}

	// since older than the stream holds: stream.gap first.
	e.rdb.XTrimMaxLen(t.Context(), keyspace.EventsStream, 1)
	g, _, err := dial(t, e, "since=1-0", auth)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if m := readEvent(t, g); m["type"] != "stream.gap" || m["since"] != "1-0" {
		t.Fatalf("want stream.gap since 1-0, got %v", m)
	}
	pushtest.WaitLive(t, g)
}

// A watcher that stops reading loses events only for itself, is told how
// many with stream.dropped once it reads again, and nothing else waits for
// it: jobs are enqueued as fast meanwhile.
func TestSlowWatcher(t *testing.T) {
	e := setup(t)
	slow, _, err := dial(t, e, "token="+viewerToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	pushtest.WaitLive(t, slow)
	pad := strings.Repeat("x", 1000)
	pipe := e.rdb.Pipeline()
	for i := range 20000 {
		args, _ := keyspace.AppendArgs(keyspace.EventsStream, 100000, jobs.Event{Type: jobs.EventJobProgress, Store: "orders", Phase: pad, Done: int64(i), At: time.Now()})
		pipe.XAdd(t.Context(), args)
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The watcher reads nothing until the end: an enqueue that waited for
	// it would never answer (e.do gives up after testsignal.Timeout).
	a := e.do("POST", "/api/admin/verify/orders", operatorToken, nil)
	if a.status != 202 {
		t.Fatalf("an enqueue while a watcher is stuck: %d %s", a.status, a.raw)
	}
	// Wait until the server has dropped events for the watcher (its
	// counter says so): a fixed wait is not enough on a loaded machine,
	// where the tailer may not have pushed enough yet to overflow it.
	if !testsignal.Poll(30*time.Second, func() bool { return e.metric("storekeeper_ws_dropped_total") != 0 }) {
		t.Fatal("no event was dropped for a watcher that reads nothing")
	}
	e.waitJob(a.body["job_id"].(string), jobs.StateSucceeded)
	last := e.do("POST", "/api/admin/backup/orders", operatorToken, nil)
	id := last.body["job_id"].(string)
	dropped := 0
	for {
		m := readEvent(t, slow)
		if m["type"] == "stream.dropped" {
			dropped += int(m["count"].(float64))
			// The watcher still drains what queued while it read nothing,
			// so the job's own events may be among those lost: told so, a
			// client reads the job's record, as ctl --wait does.
			if a := e.do("GET", "/api/jobs/"+id, viewerToken, nil); a.body["state"] == string(jobs.StateSucceeded) {
				break
			}
		}
		if m["type"] == "job.succeeded" && m["job_id"] == id {
			break
		}
	}
	if dropped == 0 {
		t.Fatal("the slow watcher lost events without being told")
	}
	t.Logf("slow watcher told it dropped %d events", dropped)
}

// metric returns the value of an unlabelled metric on /metrics, 0 when it
// is not there.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	a := e.do("GET", "/metrics", "", nil)
	for _, line := range strings.Split(string(a.raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// No query or body makes the server panic or answer 5xx while Redis is up.
func FuzzRequests(f *testing.F) {
	e := setupFuzz(f)
	routes := []struct{ method, path string }{
		{"POST", "/api/admin/compact/orders"}, {"POST", "/api/admin/compact"}, {"POST", "/api/admin/verify/users"},
		{"POST", "/api/admin/restore/orders"}, {"GET", "/api/history"}, {"GET", "/api/jobs"}, {"GET", "/api/jobs/x"},
		{"DELETE", "/api/jobs/x"}, {"GET", "/api/stores/orders"}, {"POST", "/api/stores/orders/pause"}, {"GET", "/ws"},
		{"GET", "/api/dashboard"},
	}
	f.Add(0, "", `{"force":true}`)
	f.Add(4, "limit=10&before=1-0&kind=compact&store=orders", "")
	f.Add(4, "limit=99999999999999999999", "")
	f.Add(3, "", `{"backup_id":"../../etc"}`)
	f.Add(5, "batch=%00&state=active", "")
	f.Add(10, "since=18446744073709551616-0&kind=x", "")
	f.Add(1, "", `{"dry_run":null}`)
	f.Add(6, "", "\x00\xff")
	f.Fuzz(func(t *testing.T, route int, query, body string) {
		r := routes[(route%len(routes)+len(routes))%len(routes)]
		req := &http.Request{Method: r.method, URL: &url.URL{Path: r.path, RawQuery: query}, Header: http.Header{},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Host: "example.com"}
		req.Header.Set("Authorization", "Bearer "+operatorToken)
		req = req.WithContext(t.Context())
		rec := httptest.NewRecorder()
		e.api.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s?%q %q: %d %s", r.method, r.path, query, body, rec.Code, rec.Body)
		}
	})
}

// asynqmon is mounted read-only: deleting a task there would bypass the
// job's record and its locks, so it is refused, and the job is untouched.
func TestMonitoringIsReadOnly(t *testing.T) {
	e := setup(t)
	e.w.Shutdown() // the job stays pending
	a := e.do("POST", "/api/admin/compact/orders", operatorToken, nil)
	id := a.body["job_id"].(string)
	if g := e.do("GET", "/monitoring/api/queues", operatorToken, nil); g.status != 200 {
		t.Fatalf("asynqmon queues: %d %s", g.status, g.raw)
	}
	del := e.do("DELETE", "/monitoring/api/queues/node.n1/pending_tasks/"+id, operatorToken, nil)
	if del.status != http.StatusMethodNotAllowed {
		t.Fatalf("asynqmon delete: %d %s", del.status, del.raw)
	}
	if r := e.do("GET", "/api/jobs/"+id, viewerToken, nil); r.body["state"] != "pending" {
		t.Fatalf("job after the refused delete: %s", r.raw)
	}
	if v := e.do("GET", "/monitoring/api/queues", viewerToken, nil); v.status != 403 {
		t.Fatalf("asynqmon as viewer: %d", v.status)
	}
}

// A watcher that stays stuck is disconnected (its connection closed: a
// close frame would wait behind its full buffer); the others are not
// touched.
func TestStuckWatcherDisconnected(t *testing.T) {
	e := setupTB(t, func(c *api.Config) { c.StuckWatcher = time.Second })
	stuck, _, err := dial(t, e, "token="+viewerToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fine, _, err := dial(t, e, "store=users&token="+viewerToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fine.Close()
	pushtest.WaitLive(t, stuck)
	pushtest.WaitLive(t, fine)
	pad := strings.Repeat("x", 1000)
	// Keep events coming past the stuck limit, so the sender sees it.
	for round := range 6 {
		pipe := e.rdb.Pipeline()
		for i := range 5000 {
			args, _ := keyspace.AppendArgs(keyspace.EventsStream, 100000, jobs.Event{Type: jobs.EventJobProgress, Store: "orders", Phase: pad, Done: int64(round*5000 + i), At: time.Now()})
			pipe.XAdd(t.Context(), args)
		}
		if _, err := pipe.Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
		// A real wall-clock wait: being stuck for StuckWatcher (1 s) of
		// real time is what is under test; the rounds of events between
		// the waits keep the sender finding the watcher full.
		time.Sleep(400 * time.Millisecond)
	}
	// Reading now drains what was buffered, then the close frame.
	_ = stuck.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := stuck.ReadMessage()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			m := e.do("GET", "/metrics", "", nil)
			var lines []string
			for _, l := range strings.Split(string(m.raw), "\n") {
				if strings.HasPrefix(l, "storekeeper_ws") {
					lines = append(lines, l)
				}
			}
			t.Fatalf("stuck watcher was not disconnected: %v (%v)", err, lines)
		}
		break
	}
	// The other watcher is still served.
	v := e.do("POST", "/api/admin/verify/users", operatorToken, nil)
	for {
		m := readEvent(t, fine)
		if m["type"] == "job.succeeded" && m["job_id"] == v.body["job_id"] {
			break
		}
	}
}

// A store's backups: their files in GET /api/stores/:store/backups, not
// in the store listings (its status leaves them out: see
// jobs.BackupFileLists).
func TestBackupFilesOnlyInTheBackupsList(t *testing.T) {
	e := setup(t)
	backup := e.do("POST", "/api/admin/backup/orders", operatorToken, nil)
	e.waitJob(backup.body["job_id"].(string), jobs.StateSucceeded)
	list := e.do("GET", "/api/stores/orders/backups", viewerToken, nil)
	bs, _ := list.body["backups"].([]any)
	if list.status != 200 || len(bs) != 1 {
		t.Fatalf("backups: %d %s", list.status, list.raw)
	}
	files, _ := bs[0].(map[string]any)["files"].([]any)
	if sum, _ := firstField(files, "sha256").(string); len(files) == 0 || sum == "" {
		t.Fatalf("backups without their files: %s", list.raw)
	}
	for _, path := range []string{"/api/stores/orders", "/api/stores", "/api/dashboard"} {
		a := e.do("GET", path, viewerToken, nil)
		if a.status != 200 || !bytes.Contains(a.raw, []byte(`"backups":[{`)) || bytes.Contains(a.raw, []byte(`"sha256"`)) {
			t.Errorf("GET %s: %d %s; want the backup listed without its files", path, a.status, a.raw)
		}
	}
}

// firstField is field of the first element of list, an object; nil when
// there is none.
func firstField(list []any, field string) any {
	if len(list) == 0 {
		return nil
	}
	m, _ := list[0].(map[string]any)
	return m[field]
}
