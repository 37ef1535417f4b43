package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"storekeeper/api"
	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// The HTTP security suite. It walks every route the router holds
// (gin's Engine.Routes(): a new route that this file does not classify
// fails it) with every way a request can be wrong or hostile: no token, a
// wrong one, a viewer's on an operator route, HTTP Basic outside
// /monitoring, form, multipart and text bodies (what an HTML form on
// another site sends), a foreign, opaque or scheme-mismatched Origin and
// a forged Host, oversized bodies (declared and chunked), malformed,
// duplicate-key and wrong-case JSON, hostile path and query values. Every
// refusal must be the documented JSON error ({"error": code, "message"})
// with the expected status, nothing may answer 5xx, and Redis — every key
// and value, but the ones that move by themselves (heartbeats, published
// stats, asynq's server records) — must be the same after each refused
// request (and after every GET) as before it: nothing enqueued, paused,
// cancelled or subscribed.

// routeClass is who may use a route: open (anyone), viewer, operator,
// monitoring (operator, HTTP Basic accepted).
type routeClass string

const (
	classOpen       routeClass = "open"
	classViewer     routeClass = "viewer"
	classOperator   routeClass = "operator"
	classMonitoring routeClass = "monitoring"
)

// routeClasses classifies every route. A route missing here fails
// TestSecurityEveryRoute: classify it (and think about what it must
// refuse).
var routeClasses = map[string]routeClass{
	"POST /api/admin/compact":        classOperator,
	"POST /api/admin/compact/:store": classOperator,
	"POST /api/admin/backup":         classOperator,
	"POST /api/admin/backup/:store":  classOperator,
	"POST /api/admin/verify":         classOperator,
	"POST /api/admin/verify/:store":  classOperator,
	"POST /api/admin/restore/:store": classOperator,
	"POST /api/admin/drill":          classOperator,
	"POST /api/admin/drill/:store":   classOperator,
	"POST /api/admin/adopt/:store":   classOperator,
	"GET /api/jobs":                  classViewer,
	"GET /api/jobs/:id":              classViewer,
	"DELETE /api/jobs/:id":           classOperator,
	"GET /api/history":               classViewer,
	"GET /api/stores":                classViewer,
	"GET /api/stores/:store":         classViewer,
	"GET /api/stores/:store/backups": classViewer,
	"POST /api/stores/:store/pause":  classOperator,
	"POST /api/stores/:store/resume": classOperator,
	"GET /api/schedules":             classViewer,
	"GET /api/nodes":                 classViewer,
	"GET /api/dashboard":             classViewer,
	"GET /api/push/key":              classViewer,
	"POST /api/push/subscriptions":   classViewer,
	"DELETE /api/push/subscriptions": classViewer,
	"GET /api/openapi.json":          classOpen,
	"GET /ws":                        classViewer,
	"GET /metrics":                   classOpen,
	"GET /healthz":                   classOpen,
	"GET /readyz":                    classOpen,
	"GET /":                          classOpen,
	"GET /ui/*file":                  classOpen,
	"GET /monitoring":                classMonitoring,
	"GET /monitoring/*path":          classMonitoring,
	"POST /monitoring":               classMonitoring, // registered with Any by older code
	"PUT /monitoring":                classMonitoring,
	"PATCH /monitoring":              classMonitoring,
	"HEAD /monitoring":               classMonitoring,
	"OPTIONS /monitoring":            classMonitoring,
	"DELETE /monitoring":             classMonitoring,
	"CONNECT /monitoring":            classMonitoring,
	"TRACE /monitoring":              classMonitoring,
	"POST /monitoring/*path":         classMonitoring,
	"PUT /monitoring/*path":          classMonitoring,
	"PATCH /monitoring/*path":        classMonitoring,
	"HEAD /monitoring/*path":         classMonitoring,
	"OPTIONS /monitoring/*path":      classMonitoring,
	"DELETE /monitoring/*path":       classMonitoring,
	"CONNECT /monitoring/*path":      classMonitoring,
	"TRACE /monitoring/*path":        classMonitoring,
}

// errorCodes are the documented error codes (docs/design.md, "HTTP API").
var errorCodes = []string{"invalid_request", "unauthorized", "forbidden", "cross_origin", "unsupported_media_type",
	"not_found", "unknown_store", "unknown_job", "unknown_backup", "method_not_allowed", "body_too_large", "no_backup",
	"restore_in_progress", "job_finished", "too_many_subscriptions", "store_unknown_state", "redis_unavailable",
	"too_many_watchers", "too_many_filters", "bad_cursor", "push_endpoint_refused"}

// movingKeys are keys that change by themselves while nothing is asked:
// heartbeats, published stats, leases, asynq's server records.
var movingKeys = regexp.MustCompile(`^(asynq:servers|asynq:workers|storekeeper:node:|storekeeper:nodes$|storekeeper:storestats:|storekeeper:lease:|storekeeper:schedules$)`)

// redisSnapshot is every key's serialized value (DUMP), but the moving ones.
func redisSnapshot(t testing.TB, rdb *redis.Client) map[string]string {
	t.Helper()
	var keys []string
	iter := rdb.Scan(t.Context(), 0, "*", 1000).Iterator()
	for iter.Next(t.Context()) {
		if !movingKeys.MatchString(iter.Val()) {
			keys = append(keys, iter.Val())
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	dumps := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		dumps[i] = pipe.Dump(t.Context(), k)
	}
	_, _ = pipe.Exec(t.Context())
	out := make(map[string]string, len(keys))
	for i, k := range keys {
		v, err := dumps[i].Result()
		if err == redis.Nil {
			continue // expired meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

func snapshotDiff(before, after map[string]string) []string {
	var d []string
	for k, v := range after {
		if w, ok := before[k]; !ok {
			d = append(d, "new key "+k)
		} else if w != v {
			d = append(d, "changed "+k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		}
	}
	slices.Sort(d)
	return d
}

// probe is one request of the suite.
type probe struct {
	name   string
	method string
	path   string // with its query
	header http.Header
	host   string
	body   []byte
	chunk  bool // send the body chunked, with no length
	// want is the refusal expected: a status and an error code; -1 any
	// refusal; 0 no expectation, or with served, a 2xx or 3xx. Nothing
	// may answer 5xx, and a GET must change nothing.
	status int
	code   string
	served bool
}

type chunked struct{ io.Reader } // hides the length: the client sends it chunked

func (e *env) send(p probe) (*http.Response, []byte) {
	e.t.Helper()
	var body io.Reader
	if p.body != nil {
		body = bytes.NewReader(p.body)
		if p.chunk {
			body = chunked{body}
		}
	}
	req, err := http.NewRequestWithContext(e.t.Context(), p.method, e.srv.URL+p.path, body)
	if err != nil {
		e.t.Fatalf("%s: %v", p.name, err)
	}
	if p.chunk {
		req.ContentLength = -1
	}
	for k, v := range p.header {
		req.Header[k] = v
	}
	if p.host != "" {
		req.Host = p.host
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, []byte(err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil // a WebSocket: it would never end
	}
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

// hostileValues go into path parameters; every one names nothing.
var hostileValues = []string{
	"..", "..%2F..%2Fetc%2Fpasswd", "%00", "orders%00", "a%0D%0ASet-Cookie:%20x=1", strings.Repeat("a", 2000), "ORDERS",
	"orders%20", "%E2%80%AEsredro", "*", "orders.", "-x", "%25", "%FF%FE", "orders;rm%20-rf", "%7B%22x%22%3A1%7D",
}

// hostileQuery is every query parameter any route reads, with values no
// route accepts, and a few no route reads.
const hostileQuery = "store=%00&store=..%2F..&kind=..%2F&kind=compact%00&state=%0A&limit=-1&before=zz&since=99999999999999999999-0" +
	"&batch=*&job=%00&endpoint=http%3A%2F%2F169.254.169.254%2F&token=x&backup_id=..%2F..&force=true&%00=%00"

func TestSecurityEveryRoute(t *testing.T) {
	e := setup(t)
	// A finished job for :id, the VAPID key made (its first reader makes
	// it), and then nothing in flight: Redis holds still.
	b := e.do("POST", "/api/admin/backup/orders", operatorToken, nil)
	jobID, _ := b.body["job_id"].(string)
	e.waitJob(jobID, jobs.StateSucceeded)
	e.do("GET", "/api/push/key", viewerToken, nil)
	e.waitStats("users")

	engine, ok := e.api.Handler().(*gin.Engine)
	if !ok {
		t.Fatalf("the handler is a %T, not gin's engine", e.api.Handler())
	}
	host := strings.TrimPrefix(e.srv.URL, "http://")
	basic := func(user, pass string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}
	bearer := func(tok string) string { return "Bearer " + tok }
	with := func(h http.Header, kv ...string) http.Header {
		out := h.Clone()
		if out == nil {
			out = http.Header{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[http.CanonicalHeaderKey(kv[i])] = []string{kv[i+1]}
		}
		return out
	}
	wsHeaders := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}

	total, refused := 0, 0
	seen := map[string]bool{}
	for _, r := range engine.Routes() {
		key := r.Method + " " + r.Path
		class, known := routeClasses[key]
		if !known {
			t.Errorf("route %s is not classified in routeClasses: say who may use it", key)
			continue
		}
		seen[key] = true
		safe := r.Method == "GET" || r.Method == "HEAD"
		concrete := func(v map[string]string) string {
			p := r.Path
			for _, name := range []string{":store", ":id", "*path", "*file"} {
				if val, ok := v[name]; ok {
					p = strings.Replace(p, name, val, 1)
				}
			}
			return p
		}
		path := concrete(map[string]string{":store": "orders", ":id": jobID, "*path": "api/queues", "*file": "app.js"})
		hdr := http.Header{}
		if r.Path == "/ws" {
			hdr = wsHeaders.Clone()
		}
		var probes []probe
		add := func(p probe) {
			if p.method == "" {
				p.method = r.Method
			}
			if p.path == "" {
				p.path = path
			}
			probes = append(probes, p)
		}
		// Credentials.
		st, code, open := 401, "unauthorized", class == classOpen
		if open {
			st, code = 0, ""
		}
		add(probe{name: "no token", header: hdr, status: st, code: code, served: open})
		add(probe{name: "wrong token", header: with(hdr, "Authorization", bearer("wrong-token-0123456789")), status: st, code: code, served: open})
		add(probe{name: "wrong Basic", header: with(hdr, "Authorization", basic("x", "wrong-token-0123456789")), status: st, code: code, served: open})
		if r.Path != "/ws" { // the one route that takes it
			add(probe{name: "token in the query", path: path + "?token=" + operatorToken, header: hdr, status: st, code: code, served: open})
		}
		switch {
		case class == classOperator || class == classMonitoring:
			add(probe{name: "viewer", header: with(hdr, "Authorization", bearer(viewerToken)), status: 403, code: "forbidden"})
		case !safe: // a viewer's own non-GET route with no body: a bad request
			add(probe{name: "viewer, no body", header: with(hdr, "Authorization", bearer(viewerToken)), status: 400, code: "invalid_request"})
		}
		if safe && r.Path != "/ws" {
			add(probe{name: "operator", header: with(hdr, "Authorization", bearer(operatorToken)), served: true})
		}
		// HTTP Basic is the browser's: /monitoring only.
		if class == classMonitoring {
			if safe {
				add(probe{name: "Basic", header: with(hdr, "Authorization", basic("anyone", operatorToken)), served: true})
			}
		} else if class != classOpen {
			add(probe{name: "Basic", header: with(hdr, "Authorization", basic("anyone", operatorToken)), status: 401, code: "unauthorized"})
			add(probe{name: "Basic, viewer", header: with(hdr, "Authorization", basic("anyone", viewerToken)), status: 401, code: "unauthorized"})
		}
		// What a page on another site can make a browser send.
		if !safe {
			form := with(hdr, "Authorization", basic("anyone", operatorToken), "Content-Type", "application/x-www-form-urlencoded")
			add(probe{name: "form with Basic", header: form, body: []byte("force=true&backup_id=x"), status: 415, code: "unsupported_media_type"})
			add(probe{name: "empty form with Basic", header: form, body: []byte{}, status: 415, code: "unsupported_media_type"})
			add(probe{name: "form with Basic from another site", header: with(form, "Origin", "https://evil.example"),
				body: []byte("force=true"), status: 403, code: "cross_origin"})
			op := with(hdr, "Authorization", bearer(operatorToken))
			for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "text/plain;charset=UTF-8",
				"multipart/form-data; boundary=x", "application/jsonp", "application/json; charset=utf-16", "json", ""} {
				add(probe{name: "operator, Content-Type " + ct, header: with(op, "Content-Type", ct), body: []byte(`{}`), status: 415, code: "unsupported_media_type"})
			}
			add(probe{name: "operator, two Content-Types", header: with(op, "Content-Type", "application/json"), body: []byte(`{}`),
				status: 415, code: "unsupported_media_type"})
			probes[len(probes)-1].header["Content-Type"] = []string{"application/json", "text/plain"}
			add(probe{name: "text/plain with Basic", header: with(form, "Content-Type", "text/plain"), body: []byte(`{"force":true}`),
				status: 415, code: "unsupported_media_type"})
		}
		// Origins: a foreign one, an opaque one, the server's host on
		// another scheme, a forged Host to match a foreign Origin.
		if !safe || r.Path == "/ws" {
			op := with(hdr, "Authorization", bearer(operatorToken))
			if !safe {
				op = with(op, "Content-Type", "application/json")
			}
			var body []byte
			if !safe {
				body = []byte(`{}`)
			}
			for _, o := range []string{"https://evil.example", "null", "https://" + host, "http://" + host + ".evil.example",
				"http://evil.example", "http://localhost.evil.example", "file://", "http://" + host + "@evil.example", ""} {
				add(probe{name: "Origin " + o, header: with(op, "Origin", o), body: body, status: 403, code: "cross_origin"})
			}
			add(probe{name: "Host forged to match the Origin", header: with(op, "Origin", "http://evil.example"), host: "evil.example",
				body: body, status: 403, code: "cross_origin"})
			add(probe{name: "two Origins", header: with(op, "Origin", e.srv.URL), body: body, status: 403, code: "cross_origin"})
			probes[len(probes)-1].header["Origin"] = []string{e.srv.URL, "https://evil.example"}
		} else {
			add(probe{name: "GET from another site", header: with(hdr, "Authorization", bearer(operatorToken), "Origin", "https://evil.example"), served: true})
		}
		// Bodies.
		op := with(hdr, "Authorization", bearer(operatorToken), "Content-Type", "application/json")
		big := append([]byte(`{"force":true,"x":"`), bytes.Repeat([]byte("a"), api.MaxBody)...)
		big = append(big, `"}`...)
		add(probe{name: "oversized", header: op, body: big, status: 413, code: "body_too_large"})
		if !safe {
			add(probe{name: "oversized, chunked", header: op, body: big, chunk: true, status: 413, code: "body_too_large"})
			for _, b := range []string{`{`, `{"force":true,"force":false}`, `{"FORCE":true}`, `{"Force":true}`, `{"backup_id":"a","backup_id":"b"}`,
				`{"Backup_ID":"x"}`, `{"endpoint":"https://push.example.com/x","endpoint":"https://push.example.com/y"}`, `{"Endpoint":"x"}`,
				`[]`, `null`, `"x"`, `1`, `{} {}`, `{}x`, `{"x":1}`, "\xff\xfe{}", `{"keys":{"auth":"a","auth":"b"}}`,
				strings.Repeat(`{"x":`, 5000) + "1" + strings.Repeat("}", 5000), `{"force":true}` + strings.Repeat(" ", 10) + `,`} {
				add(probe{name: "malformed " + fmt.Sprintf("%.40q", b), header: op, body: []byte(b), status: 400, code: "invalid_request"})
			}
		}
		// Hostile path and query values: never served, never 5xx.
		for _, name := range []string{":store", ":id", "*path", "*file"} {
			if !strings.Contains(r.Path, name) {
				continue
			}
			for _, v := range hostileValues {
				p := concrete(map[string]string{":store": "orders", ":id": jobID, "*path": "api/queues", "*file": "app.js", name: v})
				pr := probe{name: "hostile " + name + " " + fmt.Sprintf("%.30s", v), path: p + "?" + hostileQuery, header: op}
				if !safe {
					pr.body, pr.status = []byte(`{}`), -1 // any refusal
				}
				add(pr)
			}
		}
		if r.Path != "/ws" {
			pr := probe{name: "hostile query", path: path + "?" + hostileQuery, header: op}
			if !safe {
				pr.body = []byte(`{}`)
				pr.header = with(op, "Authorization", bearer(viewerToken))
				if class == classViewer {
					pr.status = -1
				} else {
					pr.status, pr.code = 403, "forbidden"
				}
			}
			add(pr)
		}

		for _, p := range probes {
			total++
			before := redisSnapshot(t, e.rdb)
			resp, raw := e.send(p)
			after := redisSnapshot(t, e.rdb)
			what := fmt.Sprintf("%s %.80s (%s)", p.method, p.path, p.name)
			if resp == nil {
				t.Errorf("%s: %s", what, raw)
				continue
			}
			if resp.StatusCode >= 500 {
				t.Errorf("%s: %d %.300s", what, resp.StatusCode, raw)
				continue
			}
			refusal := resp.StatusCode >= 400
			if refusal {
				refused++
				if !checkErrorBody(t, what, resp, raw) {
					continue
				}
			}
			switch {
			case p.status > 0 && resp.StatusCode != p.status:
				t.Errorf("%s: %d %.200s, want %d %s", what, resp.StatusCode, raw, p.status, p.code)
			case p.status > 0 && p.code != "" && !bytes.Contains(raw, []byte(`"error":"`+p.code+`"`)):
				t.Errorf("%s: %d %.200s, want the code %s", what, resp.StatusCode, raw, p.code)
			case p.status < 0 && !refusal:
				t.Errorf("%s: %d %.200s, want a refusal", what, resp.StatusCode, raw)
			case p.served && (refusal || resp.StatusCode < 200):
				t.Errorf("%s: %d %.200s, want it served", what, resp.StatusCode, raw)
			}
			if refusal || safe {
				if d := snapshotDiff(before, after); len(d) > 0 {
					t.Errorf("%s: answered %d, and Redis changed: %v", what, resp.StatusCode, d)
				}
			}
			if rid := resp.Header.Get("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(rid) {
				t.Errorf("%s: X-Request-Id %q is not the server's", what, rid)
			}
		}
	}
	t.Logf("%d requests on %d routes, %d refused", total, len(seen), refused)
	// The snapshot sees a change: an accepted pause is one.
	before := redisSnapshot(t, e.rdb)
	if a := e.do("POST", "/api/stores/users/pause", operatorToken, nil); a.status != 200 {
		t.Fatalf("pause: %d %s", a.status, a.raw)
	}
	if d := snapshotDiff(before, redisSnapshot(t, e.rdb)); len(d) == 0 {
		t.Fatal("an accepted pause left the Redis snapshot as it was: the suite would not see a change")
	}
	e.do("POST", "/api/stores/users/resume", operatorToken, nil)
	// The store is served as before: its data and its jobs.
	if a := e.do("GET", "/api/jobs", viewerToken, nil); a.status != 200 || len(a.body["jobs"].([]any)) != 0 {
		t.Errorf("jobs in flight after the suite: %s", a.raw)
	}
	if a := e.do("GET", "/api/schedules", viewerToken, nil); a.status != 200 || len(a.body["paused"].(map[string]any)) != 0 {
		t.Errorf("paused stores after the suite: %s", a.raw)
	}
}

// checkErrorBody checks a refusal's body: JSON {"error": code, "message"},
// a documented code, nothing else, no internals.
func checkErrorBody(t *testing.T, what string, resp *http.Response, raw []byte) bool {
	t.Helper()
	if resp.Request.Method == "HEAD" {
		return true // no body
	}
	var body map[string]any
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || json.Unmarshal(raw, &body) != nil {
		t.Errorf("%s: %d with %q, not the JSON error: %.200q", what, resp.StatusCode, ct, raw)
		return false
	}
	code, _ := body["error"].(string)
	msg, _ := body["message"].(string)
	if len(body) != 2 || !slices.Contains(errorCodes, code) || msg == "" {
		t.Errorf("%s: %d %.200s: not {\"error\": <documented code>, \"message\": …}", what, resp.StatusCode, raw)
		return false
	}
	if bytes.Contains(raw, []byte(".go:")) || bytes.Contains(raw, []byte("goroutine")) {
		t.Errorf("%s: leaks internals: %.200s", what, raw)
	}
	return true
}

// A restore before the store's owner has published its stats is refused
// (409 store_unknown_state): nothing says which backup it would take.
func TestRestoreBeforeStatsPublished(t *testing.T) {
	e := setup(t)
	b := e.do("POST", "/api/admin/backup/orders", operatorToken, nil)
	e.waitJob(b.body["job_id"].(string), jobs.StateSucceeded)
	v := e.do("POST", "/api/admin/verify/orders", operatorToken, nil)
	e.waitJob(v.body["job_id"].(string), jobs.StateSucceeded)
	e.w.Shutdown() // nothing publishes again
	if err := e.rdb.Del(t.Context(), keyspace.StatsKey("orders")).Err(); err != nil {
		t.Fatal(err)
	}
	before := redisSnapshot(t, e.rdb)
	a := e.do("POST", "/api/admin/restore/orders", operatorToken, nil)
	if a.status != 409 || a.body["error"] != "store_unknown_state" {
		t.Fatalf("restore before stats: %d %s", a.status, a.raw)
	}
	if d := snapshotDiff(before, redisSnapshot(t, e.rdb)); len(d) > 0 {
		t.Fatalf("the refused restore changed Redis: %v", d)
	}
}

// A restore's quarantine path is shown relative to the data directory in
// the job's record, wherever the API shows it.
func TestQuarantinePathRelative(t *testing.T) {
	e := setup(t)
	b := e.do("POST", "/api/admin/backup/orders", operatorToken, nil)
	e.waitJob(b.body["job_id"].(string), jobs.StateSucceeded)
	v := e.do("POST", "/api/admin/verify/orders", operatorToken, nil)
	e.waitJob(v.body["job_id"].(string), jobs.StateSucceeded)
	r := e.do("POST", "/api/admin/restore/orders", operatorToken, nil)
	if r.status != 202 {
		t.Fatalf("restore: %d %s", r.status, r.raw)
	}
	id := r.body["job_id"].(string)
	e.waitJob(id, jobs.StateSucceeded)
	dataDir := e.reg.DataDir()
	// The worker writes the path relative to the data dir itself; the API
	// also cuts an absolute one (a record written by an older worker).
	stored, err := e.rdb.HGet(t.Context(), keyspace.RecordKey(id), "result").Result()
	if err != nil || strings.Contains(stored, dataDir) || !strings.Contains(stored, `".storekeeper/quarantine/orders/`) {
		t.Fatalf("the worker's record: %q %v; want the quarantine path relative to the data dir", stored, err)
	}
	old := strings.Replace(stored, `".storekeeper/quarantine/`, `"`+dataDir+`/.storekeeper/quarantine/`, 1)
	if err := e.rdb.HSet(t.Context(), keyspace.RecordKey(id), "result", old).Err(); err != nil {
		t.Fatal(err)
	}
	rec := e.do("GET", "/api/jobs/"+id, viewerToken, nil).body
	res, _ := rec["result"].(map[string]any)
	if q, _ := res["quarantine"].(string); !strings.HasPrefix(q, ".storekeeper/quarantine/orders/") {
		t.Errorf("GET /api/jobs/:id: quarantine %q; want it relative to the data dir (.storekeeper/quarantine/orders/…)", q)
	}
	for _, a := range []answer{
		e.do("GET", "/api/jobs/"+id, viewerToken, nil),
		e.do("DELETE", "/api/jobs/"+id, operatorToken, nil), // 409 job_finished, and the record
		e.do("GET", "/api/history?limit=50", viewerToken, nil),
		e.do("GET", "/api/dashboard", viewerToken, nil),
	} {
		if bytes.Contains(a.raw, []byte(dataDir)) {
			t.Errorf("an answer names the data dir %s: %.300s", dataDir, a.raw)
		}
	}
}
