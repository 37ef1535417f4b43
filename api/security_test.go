package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/redistest"
	"storekeeper/internal/syncbuf"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

const (
	secViewer   = "security-viewer-token-0123"
	secOperator = "security-operator-token-0123"
)

// testRedis is a Redis for servers that serve no Redis-backed route
// (New reads asynq's queues once as it registers their collector).
func testRedis(t testing.TB) redis.UniversalClient {
	t.Helper()
	return redistest.Start(t).Client(t)
}

func newSecServer(t testing.TB, rdb redis.UniversalClient, tweak func(*Config)) *Server {
	t.Helper()
	tokens, err := ParseTokens("v:viewer:" + secViewer + ",ops:operator:" + secOperator)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// originRequest is a request that arrived on local (the server's side of
// the connection; "" none), with Host host and the Origin headers given.
func originRequest(method, local, host string, tlsOn bool, origins ...string) *http.Request {
	r := httptest.NewRequest(method, "http://placeholder/api/stores/orders/pause", nil)
	r.Host = host
	if local != "" {
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(fakeAddr(local))))
	}
	if tlsOn {
		r.TLS = &tls.ConnectionState{}
	}
	for _, o := range origins {
		r.Header.Add("Origin", o)
	}
	return r
}

// The origin rule: the server's own origin comes from the configuration
// (PublicURL, else Listen and TLS, else the address the connection
// arrived on), never from the Host header; scheme, host and port all
// count; loopback names are one; AllowedOrigins are exact.
func TestOriginRule(t *testing.T) {
	rdb := testRedis(t)
	type check struct {
		local, host string
		tls         bool
		origin      []string // none: no Origin header
		ok          bool
	}
	for _, c := range []struct {
		name   string
		cfg    func(*Config)
		checks []check
	}{
		{"nothing configured: the connection's address", nil, []check{
			{"127.0.0.1:8080", "127.0.0.1:8080", false, nil, true}, // not a browser
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8080"}, true},
			{"127.0.0.1:8080", "localhost:8080", false, []string{"http://localhost:8080"}, true},
			{"127.0.0.1:8080", "[::1]:8080", false, []string{"http://[::1]:8080"}, true},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"HTTP://LOCALHOST:8080"}, true},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://127.0.0.1:8080"}, false}, // another scheme
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8081"}, false},  // another port
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1"}, false},
			{"127.0.0.1:8080", "evil.example", false, []string{"http://evil.example"}, false}, // Host forged to match
			{"127.0.0.1:8080", "evil.example:8080", false, []string{"http://evil.example:8080"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"null"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{""}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8080", "http://127.0.0.1:8080"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://u@127.0.0.1:8080"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8080/x"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8080.evil.example"}, false},
			{"127.0.0.1:8443", "127.0.0.1:8443", true, []string{"https://127.0.0.1:8443"}, true},
			{"127.0.0.1:8443", "127.0.0.1:8443", true, []string{"http://127.0.0.1:8443"}, false},
			{"10.1.2.3:80", "10.1.2.3", false, []string{"http://10.1.2.3"}, true},
			{"10.1.2.3:80", "10.1.2.3", false, []string{"http://10.1.2.3:80"}, true},
			{"10.1.2.3:80", "10.1.2.3", false, []string{"http://localhost"}, false}, // not a loopback listen
			{"", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8080"}, false}, // no address known: no own origin
		}},
		{"Listen loopback with TLS", func(c *Config) { c.Listen, c.TLS = "127.0.0.1:8443", true }, []check{
			{"127.0.0.1:8443", "localhost:8443", false, []string{"https://localhost:8443"}, true},
			{"", "localhost:8443", false, []string{"https://[::1]:8443"}, true},
			{"127.0.0.1:8443", "localhost:8443", false, []string{"http://localhost:8443"}, false},
			{"127.0.0.1:8443", "evil.example", false, []string{"https://evil.example"}, false},
		}},
		{"Listen on every address", func(c *Config) { c.Listen = ":8080" }, []check{
			{"192.168.1.5:8080", "192.168.1.5:8080", false, []string{"http://192.168.1.5:8080"}, true},
			{"192.168.1.5:8080", "storekeeper.lan:8080", false, []string{"http://storekeeper.lan:8080"}, false},
		}},
		{"Listen with a host name", func(c *Config) { c.Listen = "sk.internal:9000" }, []check{
			{"10.0.0.9:9000", "sk.internal:9000", false, []string{"http://sk.internal:9000"}, true},
			{"10.0.0.9:9000", "10.0.0.9:9000", false, []string{"http://10.0.0.9:9000"}, false},
		}},
		{"PublicURL behind a proxy", func(c *Config) {
			c.PublicURL, c.Listen = "https://storekeeper.example.com/base/", "127.0.0.1:8080"
		}, []check{
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://storekeeper.example.com"}, true},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://storekeeper.example.com:443"}, true},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://storekeeper.example.com"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://127.0.0.1:8080"}, false}, // the proxy's users come from the public URL
		}},
		{"AllowedOrigins", func(c *Config) {
			c.AllowedOrigins = []string{"https://ops.example.com:8443", " https://[2001:db8::1] "}
		}, []check{
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://ops.example.com:8443"}, true},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://OPS.example.com:8443"}, true},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://ops.example.com"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"http://ops.example.com:8443"}, false},
			{"127.0.0.1:8080", "127.0.0.1:8080", false, []string{"https://[2001:db8:0::1]"}, true},
		}},
	} {
		s := newSecServer(t, rdb, c.cfg)
		for _, k := range c.checks {
			r := originRequest("POST", k.local, k.host, k.tls, k.origin...)
			if got := s.checkOrigin(r); got != k.ok {
				t.Errorf("%s: Origin %q, Host %q, on %q (TLS %v): allowed %v, want %v", c.name, k.origin, k.host, k.local, k.tls, got, k.ok)
			}
		}
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.PublicURL = "ftp://storekeeper.example.com" },
		func(c *Config) { c.PublicURL = "https://" },
		func(c *Config) { c.PublicURL = "storekeeper.example.com" },
		func(c *Config) { c.PublicURL = "https://user:pw@storekeeper.example.com" },
		func(c *Config) { c.AllowedOrigins = []string{"ops.example.com"} },
		func(c *Config) { c.AllowedOrigins = []string{"https://ops.example.com/path"} },
		func(c *Config) { c.Listen = "no port" },
		func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} },
		func(c *Config) { c.TrustedProxies = []string{"proxy.example.com"} },
	} {
		tokens, _ := ParseTokens("v:viewer:" + secViewer)
		cfg := Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)}
		bad(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted %+v", struct {
				PublicURL, Listen string
				Allowed, Proxies  []string
			}{cfg.PublicURL, cfg.Listen, cfg.AllowedOrigins, cfg.TrustedProxies})
		}
	}
}

// The WebSocket's origin check compares scheme, host and port with the
// server's own origin, not with the Host header the client wrote.
func TestWebSocketOrigin(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	_, url := startWS(t, rdb)
	hostPort := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	_, port, _ := net.SplitHostPort(hostPort)
	for _, c := range []struct {
		origin, host string
		ok           bool
	}{
		{"", "", true},
		{"http://" + hostPort, "", true},
		{"http://localhost:" + port, "localhost:" + port, true},
		{"https://" + hostPort, "", false},                        // another scheme, same host and port
		{"http://evil.example", "evil.example", false},            // Host forged to match the Origin
		{"https://evil.example", "", false},                       //
		{"http://127.0.0.1:" + port + ".evil.example", "", false}, //
		{"null", "", false},
	} {
		h := http.Header{"Authorization": {"Bearer " + wsToken}}
		if c.origin != "" {
			h.Set("Origin", c.origin)
		}
		if c.host != "" {
			h.Set("Host", c.host)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(url, h)
		if c.ok {
			if err != nil {
				t.Errorf("Origin %q Host %q: %v", c.origin, c.host, err)
				continue
			}
			conn.Close()
			continue
		}
		if err == nil {
			conn.Close()
			t.Errorf("Origin %q Host %q: upgraded; want 403 cross_origin", c.origin, c.host)
			continue
		}
		var body map[string]string
		if resp != nil {
			_ = json.NewDecoder(resp.Body).Decode(&body)
		}
		if resp == nil || resp.StatusCode != 403 || body["error"] != "cross_origin" {
			t.Errorf("Origin %q Host %q: %v %v %v; want 403 cross_origin", c.origin, c.host, resp, body, err)
		}
	}
}

// syncBuffer is a log sink the server writes while the test reads.
type syncBuffer struct{ syncbuf.Buffer }

func (b *syncBuffer) lines() []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// accessLine waits for the access log line of the request with server
// request id id.
func (b *syncBuffer) accessLine(t *testing.T, id string) map[string]any {
	t.Helper()
	var line map[string]any
	testsignal.WaitForWithin(t, 5*time.Second, "the access log line of request "+id, func() bool {
		for _, m := range b.lines() {
			if m["msg"] == "request" && m["request_id"] == id {
				line = m
				return true
			}
		}
		return false
	})
	return line
}

// Log fields a client controls: the client address comes from
// X-Forwarded-For or X-Real-IP only through a trusted proxy; the server
// always makes its own request id, and keeps a client's beside it only
// when it is one short token.
func TestClientControlledLogFields(t *testing.T) {
	rdb := testRedis(t)
	for _, c := range []struct {
		proxies []string
		remote  string
	}{
		{nil, "127.0.0.1"},
		{[]string{"10.0.0.0/8"}, "127.0.0.1"},
		{[]string{"127.0.0.1"}, "6.6.6.6"},
		{[]string{"127.0.0.0/8", "::1"}, "6.6.6.6"},
	} {
		var logs syncBuffer
		s := newSecServer(t, rdb, func(cfg *Config) {
			cfg.TrustedProxies = c.proxies
			cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		})
		hs := httptest.NewServer(s.Handler())
		for _, hdr := range []string{"X-Forwarded-For", "X-Real-IP"} {
			req, _ := http.NewRequest("GET", hs.URL+"/healthz", nil)
			req.Header.Set(hdr, "6.6.6.6")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			line := logs.accessLine(t, resp.Header.Get("X-Request-Id"))
			if line["remote"] != c.remote {
				t.Errorf("trusted proxies %v, %s: 6.6.6.6 from 127.0.0.1 logged as %v; want %s", c.proxies, hdr, line["remote"], c.remote)
			}
		}
		hs.Close()
	}

	var logs syncBuffer
	s := newSecServer(t, rdb, func(cfg *Config) { cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	serverID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, c := range []struct {
		given []string
		kept  string
	}{
		{nil, ""},
		{[]string{"abc.DEF-1_2"}, "abc.DEF-1_2"},
		{[]string{strings.Repeat("a", 64)}, strings.Repeat("a", 64)},
		{[]string{strings.Repeat("a", 65)}, ""},
		{[]string{"a b"}, ""},
		{[]string{"x\" level=ERROR msg=forged"}, ""},
		{[]string{"é"}, ""},
		{[]string{"0123456789abcdef"}, "0123456789abcdef"}, // shaped like a server id: kept as the client's only
		{[]string{"one", "two"}, ""},
	} {
		req, _ := http.NewRequest("GET", hs.URL+"/healthz", nil)
		for _, v := range c.given {
			req.Header.Add("X-Request-Id", v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if !serverID.MatchString(id) || len(c.given) > 0 && id == c.given[0] {
			t.Errorf("client id %q: X-Request-Id %q; want the server's own", c.given, id)
		}
		if got := resp.Header.Get("X-Client-Request-Id"); got != c.kept {
			t.Errorf("client id %q: X-Client-Request-Id %q; want %q", c.given, got, c.kept)
		}
		line := logs.accessLine(t, id)
		if got, _ := line["client_request_id"].(string); got != c.kept {
			t.Errorf("client id %q: logged client_request_id %q; want %q", c.given, got, c.kept)
		}
	}
}

// The pages a browser shows — the dashboard, its files and asynqmon —
// may not be framed and run only their own scripts; asynqmon's inline
// scripts are allowed by their hashes.
func TestPageHeaders(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	s := newSecServer(t, rdb, nil)
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	get := func(path string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", hs.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+secOperator)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, p := range []string{"/", "/ui/app.js", "/ui/style.css", "/ui/sw.js", "/monitoring", "/monitoring/", "/monitoring/queues/x"} {
		resp, _ := get(p)
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != 200 || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'self'") ||
			resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d, CSP %q, X-Frame-Options %q", p, resp.StatusCode, csp, resp.Header.Get("X-Frame-Options"))
		}
		scripts := directive(csp, "script-src")
		if scripts == "" {
			scripts = directive(csp, "default-src")
		}
		if strings.Contains(scripts, "'unsafe-inline'") || strings.Contains(scripts, "'unsafe-eval'") || strings.Contains(scripts, "*") {
			t.Errorf("GET %s: CSP %q lets scripts run inline, by eval or from anywhere", p, csp)
		}
	}
	resp, page := get("/monitoring/")
	csp := resp.Header.Get("Content-Security-Policy")
	scripts := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllSubmatch(page, -1)
	if len(scripts) == 0 {
		t.Fatal("asynqmon's page has no inline script: the hashes are not needed, or the page changed")
	}
	for _, m := range scripts {
		sum := sha256.Sum256(m[1])
		if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, h) {
			t.Errorf("asynqmon's inline script %.60q is not allowed by %s", m[1], csp)
		}
	}
	if r, b := get("/ui/nosuch.js"); r.StatusCode != 404 || !bytes.Contains(b, []byte(`"error":"not_found"`)) {
		t.Errorf("GET /ui/nosuch.js: %d %s", r.StatusCode, b)
	}
}

// Request bodies are decoded strictly: exact keys, no key twice, one
// object, bounded nesting.
func TestDecodeStrict(t *testing.T) {
	for _, c := range []struct {
		body string
		into func() any
		ok   bool
	}{
		{`{}`, func() any { return &compactBody{} }, true},
		{` {"force": true, "dry_run": false} `, func() any { return &compactBody{} }, true},
		{`{"FORCE": true}`, func() any { return &compactBody{} }, false},
		{`{"Force": true}`, func() any { return &compactBody{} }, false},
		{`{"dry_Run": true}`, func() any { return &compactBody{} }, false},
		{`{"force": false, "force": true}`, func() any { return &compactBody{} }, false},
		{`{"force": true, "color": "red"}`, func() any { return &compactBody{} }, false},
		{`{"force": "yes"}`, func() any { return &compactBody{} }, false},
		{`{"force": true} {}`, func() any { return &compactBody{} }, false},
		{`{"force": true}]`, func() any { return &compactBody{} }, false},
		{`[]`, func() any { return &compactBody{} }, false},
		{`null`, func() any { return &compactBody{} }, false},
		{`{`, func() any { return &compactBody{} }, false},
		{`{"backup_id": "b1"}`, func() any { return &restoreBody{} }, true},
		{`{"backup_id": "b1", "backup_id": "b2"}`, func() any { return &restoreBody{} }, false},
		{`{"BACKUP_ID": "b1"}`, func() any { return &restoreBody{} }, false},
		{`{"backup_id": "b1", "backup_\u0069d": "b2"}`, func() any { return &restoreBody{} }, false}, // the same key, escaped
		{`{"\u0066orce": true}`, func() any { return &compactBody{} }, true},                         // "force", escaped: the same key
		{`{"ſorce": true}`, func() any { return &compactBody{} }, false},                             // folds to "force" in encoding/json
		{`{"endpoint": "https://p.example/x", "expirationTime": null, "keys": {"p256dh": "a", "auth": "b"}}`, func() any { return &jobs.PushSubscription{} }, true},
		{`{"endpoint": "https://p.example/x", "keys": {"auth": "a", "auth": "b"}}`, func() any { return &jobs.PushSubscription{} }, false},
		{`{"endpoint": "https://p.example/x", "keys": {"Auth": "a"}}`, func() any { return &jobs.PushSubscription{} }, false},
		{`{"endpoint": "https://p.example/x", "expirationtime": 1}`, func() any { return &jobs.PushSubscription{} }, false},
		{`{}`, func() any { return &struct{}{} }, true},
		{`{"x": 1}`, func() any { return &struct{}{} }, false},
		{strings.Repeat(`{"keys":`, 40) + `{}` + strings.Repeat(`}`, 40), func() any { return &jobs.PushSubscription{} }, false},
	} {
		err := decodeStrict([]byte(c.body), c.into())
		if (err == nil) != c.ok {
			t.Errorf("%.80s: %v, want ok %v", c.body, err, c.ok)
		}
		if ae, isAPI := err.(*apiError); err != nil && (!isAPI || ae.status != 400 || ae.code != "invalid_request") {
			t.Errorf("%.80s: %v is not a 400 invalid_request", c.body, err)
		}
	}
	var b compactBody
	if err := decodeStrict([]byte(`{"force": true, "dry_run": true}`), &b); err != nil || !b.Force || !b.DryRun {
		t.Errorf("decoded %+v, %v", b, err)
	}
}

// Paths under a data directory are shown relative to it.
func TestRelativePaths(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/data/.storekeeper/quarantine/orders/g1":                ".storekeeper/quarantine/orders/g1",
		"data/.storekeeper/quarantine/orders/g1":                     ".storekeeper/quarantine/orders/g1",
		".storekeeper/quarantine/orders/g1":                          ".storekeeper/quarantine/orders/g1",
		"/a/.storekeeper/b/data/.storekeeper/quarantine/x":           ".storekeeper/quarantine/x",
		"restore: open /srv/data/.storekeeper/stage/orders/1.sst: x": "restore: open .storekeeper/stage/orders/1.sst: x",
		"/srv/data/orders/000001.sst":                                "/srv/data/orders/000001.sst",
		"no path here":                                               "no path here",
	} {
		if got := relativePath(in); got != want {
			t.Errorf("relativePath(%q) = %q, want %q", in, got, want)
		}
	}
	rec := publicRecord(jobs.Record{ID: "j1", Result: json.RawMessage(`{"backup_id":"b1","quarantine":"/srv/d/.storekeeper/quarantine/orders/g","took":12345678901234567}`),
		Errors: []jobs.AttemptError{{Attempt: 1, Error: "stage /srv/d/.storekeeper/stage/x: no space"}}})
	var res map[string]any
	d := json.NewDecoder(bytes.NewReader(rec.Result))
	d.UseNumber()
	if err := d.Decode(&res); err != nil || res["quarantine"] != ".storekeeper/quarantine/orders/g" || res["took"] != json.Number("12345678901234567") {
		t.Errorf("result %s (%v)", rec.Result, err)
	}
	if rec.Errors[0].Error != "stage .storekeeper/stage/x: no space" {
		t.Errorf("attempt error %q", rec.Errors[0].Error)
	}
	ev := publicEvent([]byte(`{"type":"store.restored","store":"orders","quarantine":"/srv/d/.storekeeper/quarantine/orders/g"}`))
	if bytes.Contains(ev, []byte("/srv/d")) || !bytes.Contains(ev, []byte(`".storekeeper/quarantine/orders/g"`)) {
		t.Errorf("event %s", ev)
	}
	plain := []byte(`{"type":"job.progress","store":"orders"}`)
	if got := publicEvent(plain); &got[0] != &plain[0] {
		t.Error("an event with no path was copied")
	}
}

// GET /api/history passes stored entries on without decoding them: the
// body decodes to what decoding them would give (ids set, paths relative),
// an entry storekeeper did not write is decoded and encoded (a duplicate
// "id" would otherwise reach clients), and one that is not JSON is an
// error, never a broken body.
func TestHistoryPageJSON(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	written := func(h jobs.HistoryEntry) string {
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	plain := jobs.HistoryEntry{JobID: "j1", Kind: jobs.KindBackup, Store: "orders", Status: jobs.StatusFailed, Reason: "a <b> & c", Node: "n", At: at}
	withPath := plain
	withPath.JobID, withPath.Error = "j2", "stage /srv/d/.storekeeper/stage/x: no space"
	foreign := `{"id":"forged","job_id":"j3","kind":"verify","store":"orders","status":"verified","node":"n","at":"2026-12-03T10:00:00Z"}`
	body, err := historyPageJSON([]jobs.RawHistoryEntry{
		{ID: "3-0", JSON: written(plain)}, {ID: "2-0", JSON: written(withPath)}, {ID: "1-0", JSON: foreign},
	}, "1-0")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		History []jobs.HistoryEntry `json:"history"`
		Next    string              `json:"next"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	plain.ID, withPath.ID = "3-0", "2-0"
	withPath.Error = "stage .storekeeper/stage/x: no space"
	want := []jobs.HistoryEntry{plain, withPath, {ID: "1-0", JobID: "j3", Kind: jobs.KindVerify, Store: "orders", Status: jobs.StatusVerified, Node: "n", At: at}}
	if got.Next != "1-0" || !reflect.DeepEqual(got.History, want) {
		t.Errorf("page %s\ngot  %+v\nwant %+v", body, got.History, want)
	}
	if bytes.Count(body, []byte(`"id":`)) != 3 {
		t.Errorf("an entry carries two ids: %s", body)
	}
	if body, err := historyPageJSON(nil, ""); err != nil || string(body) != `{"history":[],"next":""}` {
		t.Errorf("empty page %s, %v", body, err)
	}
	if body, err := historyPageJSON([]jobs.RawHistoryEntry{{ID: "1-0", JSON: `{"job_id":`}}, ""); err == nil {
		t.Errorf("a truncated entry gave %s", body)
	}
}

// directive is the value of a CSP directive, "" when absent.
func directive(csp, name string) string {
	for _, d := range strings.Split(csp, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), name+" "); ok {
			return v
		}
	}
	return ""
}
