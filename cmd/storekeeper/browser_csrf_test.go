package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"

	"storekeeper/api"
	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
	"storekeeper/worker"
)

// seenRequest is a request the API answered, as the test's recorder saw it.
type seenRequest struct {
	method, path, origin, auth, contentType string
	status                                  int
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Cross-site request forgery in a real Chromium. A user signs in to
// asynqmon the way a browser does — /monitoring answers 401 with a Basic
// challenge, the browser answers it with the token as password — and
// asynqmon works under its Content-Security-Policy. The protection space
// of /monitoring is "/", so from then on the browser sends those
// credentials with every request to the server, whichever site's page
// makes it. A page on another origin then submits forms (urlencoded, and
// text/plain with no field: an empty body) and calls fetch against the
// API: pause a store, compact it, restore it, back it up. Every one of
// them must be refused, and nothing may be paused or enqueued.
func TestBrowserCSRF(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	browser := chromium(t)
	start := time.Now()
	rdb := redistest.Start(t).Client(t)
	dir := t.TempDir()
	discard := slog.New(slog.DiscardHandler)
	reg, err := store.Open(store.Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"),
		Stores: []string{"gamma"}, NoSync: true, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Registry: reg, Node: "n1", TaskCheckInterval: 10 * time.Millisecond, Logger: discard,
		Schedules: map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	const token = "browser-csrf-operator-token"
	tokens, _ := api.ParseTokens("ops:operator:" + token)
	a, err := api.New(api.Config{Redis: rdb, Tokens: tokens, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	a.Start(t.Context())
	var mu sync.Mutex
	var seen []seenRequest
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sr := &statusRecorder{ResponseWriter: rw}
		a.Handler().ServeHTTP(sr, r)
		mu.Lock()
		seen = append(seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("Origin"), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), sr.status})
		mu.Unlock()
	}))
	t.Cleanup(func() { srv.Close(); a.Close(); w.Shutdown(); reg.Close() })
	requests := func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), seen...)
	}

	// A verified backup of gamma: a forged restore would have something
	// to restore.
	call := func(method, path string) map[string]any {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m
	}
	waitDone := func(id string) {
		waitFor(t, 10*time.Second, "job "+id, func() bool { return call("GET", "/api/jobs/"+id)["state"] == "succeeded" })
	}
	for _, kind := range []string{"backup", "verify"} {
		id, _ := call("POST", "/api/admin/"+kind+"/gamma")["job_id"].(string)
		waitDone(id)
	}
	waitFor(t, 10*time.Second, "gamma's verified backup published", func() bool {
		b, _ := call("GET", "/api/stores/gamma/backups")["backups"].([]any)
		return len(b) > 0 && b[0].(map[string]any)["verified_at"] != nil
	})

	// The other site: forms and fetches against the API, sent on load.
	apiURL := srv.URL
	evil := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(rw, `<!doctype html><title>cat pictures</title>
<iframe name="f1"></iframe><iframe name="f2"></iframe><iframe name="f3"></iframe>
<form id="pause" method="POST" action="%[1]s/api/stores/gamma/pause" target="f1"><input name="x" value="1"></form>
<form id="compact" method="POST" enctype="text/plain" action="%[1]s/api/admin/compact/gamma" target="f2"></form>
<form id="restore" method="POST" action="%[1]s/api/admin/restore/gamma" target="f3"></form>
<script>
for (const id of ["pause", "compact", "restore"]) document.getElementById(id).submit();
window.sent = Promise.allSettled([
  fetch(%[2]q, {method: "POST", mode: "no-cors", credentials: "include"}),
  fetch(%[3]q, {method: "POST", mode: "no-cors", credentials: "include", body: "{}"}),
]).then(() => true);
</script>`, apiURL, apiURL+"/api/admin/restore/gamma", apiURL+"/api/admin/backup/gamma")
	}))
	defer evil.Close()

	ctx, _ := browserTab(t, browser, 30*time.Second,
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")) // asynqmon's web fonts fail at once

	// Sign in at /monitoring: answer the browser's auth challenge, as a
	// user does in the browser's dialog.
	var logMu sync.Mutex
	var violations []string
	challenged := make(chan struct{}, 1)
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *fetch.EventRequestPaused:
			go func() {
				_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
			}()
		case *fetch.EventAuthRequired:
			select {
			case challenged <- struct{}{}:
			default:
			}
			go func() {
				_, _ = chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID,
					AuthChallengeResponse: &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials,
						Username: "ops", Password: token}})
			}()
		case *cdplog.EventEntryAdded:
			if strings.Contains(ev.Entry.Text, "Content Security Policy") || strings.Contains(ev.Entry.Text, "Content-Security-Policy") {
				logMu.Lock()
				violations = append(violations, ev.Entry.Text)
				logMu.Unlock()
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: new(true),
		Patterns: []*fetch.RequestPattern{{URLPattern: apiURL + "/*"}}}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(apiURL+"/monitoring")); err != nil {
		t.Fatalf("open /monitoring: %v", err)
	}
	select {
	case <-challenged:
	default:
		t.Fatal("/monitoring did not ask the browser for credentials")
	}
	if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	// asynqmon works: its scripts ran and read the queues with the
	// browser's credentials.
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`document.querySelector("#root") && document.querySelector("#root").childElementCount > 0`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("asynqmon did not render: %v", err)
	}
	waitFor(t, 10*time.Second, "asynqmon reading the queues", func() bool {
		for _, r := range requests() {
			if strings.HasPrefix(r.path, "/monitoring/api/") && r.status == 200 && strings.HasPrefix(r.auth, "Basic ") {
				return true
			}
		}
		return false
	})
	logMu.Lock()
	if len(violations) > 0 {
		t.Errorf("asynqmon's page broke its Content-Security-Policy: %q", violations)
	}
	logMu.Unlock()

	// The other site's page.
	jobKeys := func() int {
		keys, err := rdb.Keys(t.Context(), keyspace.RecordKey("*")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}
	jobsBefore := jobKeys()
	eventsBefore, _ := rdb.XLen(t.Context(), keyspace.EventsStream).Result()
	if err := chromedp.Do(ctx, chromedp.Navigate(evil.URL+"/")); err != nil {
		t.Fatalf("open the other site: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.sent`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("the other site's fetches: %v", err)
	}
	var forged []seenRequest
	waitFor(t, 10*time.Second, "the other site's five requests", func() bool {
		forged = forged[:0]
		for _, r := range requests() {
			if r.origin == evil.URL {
				forged = append(forged, r)
			}
		}
		return len(forged) >= 5
	})
	withBasic := 0
	for _, r := range forged {
		t.Logf("from the other site: %s %s (Content-Type %q, Authorization %.6s…) → %d", r.method, r.path, r.contentType, r.auth, r.status)
		if r.status < 400 {
			t.Errorf("the other site's %s %s was served: %d", r.method, r.path, r.status)
		}
		if strings.HasPrefix(r.auth, "Basic ") {
			withBasic++
		}
	}
	if withBasic == 0 {
		t.Error("the browser sent the other site's requests without the credentials it holds: this test shows nothing")
	}
	paused, err := jobsdb.Paused(t.Context(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	if len(paused) > 0 {
		t.Errorf("paused by the other site: %v", paused)
	}
	if n := jobKeys(); n != jobsBefore {
		t.Errorf("%d jobs made by the other site", n-jobsBefore)
	}
	if n, _ := rdb.XLen(t.Context(), keyspace.EventsStream).Result(); n != eventsBefore {
		t.Errorf("%d events appended while the other site's page ran", n-eventsBefore)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
