package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"storekeeper/api"
	"storekeeper/internal/redistest"
	"storekeeper/internal/syncbuf"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// historyAPI is the API alone on a private Redis holding a few history
// entries, logging to a buffer.
func historyAPI(t *testing.T) (*httptest.Server, *syncbuf.Buffer, []string) {
	t.Helper()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	var ids []string
	for i, k := range []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindCompact} {
		id, err := jobsdb.AppendHistory(t.Context(), rdb, jobs.DefaultHistoryMaxLen, jobs.HistoryEntry{JobID: fmt.Sprintf("j%d", i), Kind: k,
			Store: "orders", Status: jobs.StatusCompacted, Trigger: jobs.TriggerManual, Actor: "ops", Attempts: 1, Node: "n1", At: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	logs := &syncbuf.Buffer{}
	tokens, _ := api.ParseTokens("ann:viewer:" + viewerToken)
	a, err := api.New(api.Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() { srv.Close(); a.Close() })
	return srv, logs, ids
}

func getHistory(t *testing.T, srv *httptest.Server, query string) (int, map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/api/history?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+viewerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(resp.Body)
	_ = json.Unmarshal(raw.Bytes(), &body)
	return resp.StatusCode, body, raw.String()
}

// Every cursor that is not an entry id, or is 0-0, is 400 bad_cursor in
// every view (before=0-0 was a 500 and an ERROR in the log); a valid one
// with nothing older is an empty page without a next cursor; limit, kind
// and store errors answer as before.
func TestHistoryBadCursor(t *testing.T) {
	srv, logs, ids := historyAPI(t)
	views := []string{"", "store=orders&", "kind=compact&", "store=orders&kind=compact&"}
	for _, before := range []string{"0-0", "00-0", "0", "0-00", "yesterday", "-1", "1-", "-", "1-2-3", " 1", "+1", "1.5", "0x1f",
		"18446744073709551616-0", "1-18446744073709551616", "99999999999999999999999999", "１", "1\x00", "(1-0"} {
		for _, view := range views {
			q := view + "before=" + url.QueryEscape(before)
			status, body, raw := getHistory(t, srv, q)
			if status != http.StatusBadRequest || body["error"] != "bad_cursor" || body["message"] == "" {
				t.Errorf("?%s: %d %s, want 400 bad_cursor", q, status, raw)
			}
		}
	}
	for _, before := range []string{"1", "1-0", "0-1", "01-0"} {
		for _, view := range views {
			q := view + "before=" + before
			status, body, raw := getHistory(t, srv, q)
			if status != http.StatusOK || body["next"] != "" || raw == "" || !strings.Contains(raw, `"history":[]`) {
				t.Errorf("?%s: %d %s, want 200 with an empty page and no next", q, status, raw)
			}
		}
	}
	// Paging by the cursors the API hands out ends the same way.
	for _, view := range views {
		var got []string
		for q := view + "limit=1"; ; {
			status, body, raw := getHistory(t, srv, q)
			if status != http.StatusOK {
				t.Fatalf("?%s: %d %s", q, status, raw)
			}
			for _, e := range body["history"].([]any) {
				got = append(got, e.(map[string]any)["id"].(string))
			}
			next, _ := body["next"].(string)
			if next == "" {
				break
			}
			q = view + "limit=1&before=" + next
		}
		want := slices.Clone(ids)
		if strings.Contains(view, "kind") {
			want = []string{ids[0], ids[2]}
		}
		slices.Reverse(want)
		if !slices.Equal(got, want) {
			t.Errorf("?%s paged %v, want %v", view, got, want)
		}
	}
	for _, c := range []struct {
		query  string
		status int
		code   string
	}{
		{"limit=0", 400, "invalid_request"}, {"limit=abc", 400, "invalid_request"}, {"limit=501", 400, "invalid_request"},
		{"kind=defrag", 400, "invalid_request"}, {"store=Bad..Name", 404, "unknown_store"}, // as before
	} {
		if status, body, raw := getHistory(t, srv, c.query); status != c.status || body["error"] != c.code {
			t.Errorf("?%s: %d %s, want %d %s", c.query, status, raw, c.status, c.code)
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", logs)
	}
}

// Jobs finished by a real worker (Change.End in the finish script) are in
// the filtered views, with the ids of the global view.
func TestHistoryFilteredViewsOfRealJobs(t *testing.T) {
	e := setup(t)
	e.waitStats("users")
	for _, job := range []string{"/api/admin/backup/orders", "/api/admin/compact/users", "/api/admin/verify/orders", "/api/admin/backup/users", "/api/admin/compact/orders"} {
		a := e.do("POST", job, operatorToken, nil)
		if a.status != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", job, a.status, a.raw)
		}
		e.waitJob(a.body["job_id"].(string), jobs.StateSucceeded)
	}
	all := e.do("GET", "/api/history?limit=500", viewerToken, nil)
	entries := all.body["history"].([]any)
	if len(entries) != 5 {
		t.Fatalf("history: %s", all.raw)
	}
	for _, f := range []struct{ store, kind string }{{"orders", ""}, {"users", ""}, {"", "backup"}, {"", "compact"}, {"orders", "backup"}, {"users", "verify"}} {
		var want []string
		for _, x := range entries {
			m := x.(map[string]any)
			if (f.store == "" || m["store"] == f.store) && (f.kind == "" || m["kind"] == f.kind) {
				want = append(want, m["id"].(string))
			}
		}
		a := e.do("GET", "/api/history?store="+f.store+"&kind="+f.kind, viewerToken, nil)
		var got []string
		for _, x := range a.body["history"].([]any) {
			got = append(got, x.(map[string]any)["id"].(string))
		}
		if a.status != http.StatusOK || !slices.Equal(got, want) {
			t.Errorf("store=%s kind=%s: %d %v, want %v", f.store, f.kind, a.status, got, want)
		}
	}
}
