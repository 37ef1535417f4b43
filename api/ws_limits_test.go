package api

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

const otherWSToken = "ws-test-other-token-4567"

// startWSTokens serves the API with the default limits and two viewer
// tokens, wsToken (v) and otherWSToken (w), and returns its /ws URL.
func startWSTokens(t *testing.T) (*Server, string) {
	t.Helper()
	return startWSWith(t, redistest.Start(t).Client(t), "v:viewer:"+wsToken+",w:viewer:"+otherWSToken)
}

// tryWS dials /ws?query with token: the connection, or the refusal's
// status and JSON body.
func tryWS(t *testing.T, url, token, query string) (*websocket.Conn, int, map[string]any) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url+"?"+query, http.Header{"Authorization": {"Bearer " + token}})
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return c, http.StatusSwitchingProtocols, nil
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", query, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("refusal %d is not JSON: %q", resp.StatusCode, raw)
	}
	return nil, resp.StatusCode, body
}

// One token holds at most 64 watchers (the default) on a process: the
// 65th is refused with 429 too_many_watchers, another token is not
// affected, and a closed connection frees its place.
func TestWatchersPerTokenCapped(t *testing.T) {
	const perToken = 64 // DefaultMaxWatchersPerToken
	_, url := startWSTokens(t)
	conns := make([]*websocket.Conn, perToken)
	for i := range conns {
		c, status, body := tryWS(t, url, wsToken, "")
		if c == nil {
			t.Fatalf("watcher %d of %d refused: %d %v", i+1, perToken, status, body)
		}
		conns[i] = c
	}
	pushtest.WaitLive(t, conns[perToken-1])
	c, status, body := tryWS(t, url, wsToken, "")
	if c != nil {
		t.Fatalf("watcher %d of one token accepted; want 429 too_many_watchers", perToken+1)
	}
	if status != http.StatusTooManyRequests || body["error"] != "too_many_watchers" || !strings.Contains(fmt.Sprint(body["message"]), "64") {
		t.Fatalf("watcher %d: %d %v; want 429 too_many_watchers saying the limit", perToken+1, status, body)
	}
	// Another token has its own places.
	o, status, body := tryWS(t, url, otherWSToken, "store=s")
	if o == nil {
		t.Fatalf("another token refused while the first is full: %d %v", status, body)
	}
	pushtest.WaitLive(t, o)
	// Closing one frees its place (once the server has seen it close).
	conns[0].Close()
	// The server learns of the close when its read of the connection fails.
	var freed *websocket.Conn
	if !testsignal.Poll(5*time.Second, func() bool {
		freed, status, body = tryWS(t, url, wsToken, "")
		if status != 0 && status != http.StatusTooManyRequests {
			return true // refused for another reason: fail below
		}
		return freed != nil
	}) || freed == nil {
		t.Fatalf("a watcher closed 5 s ago left no place: %d %v", status, body)
	}
	pushtest.WaitLive(t, freed)
	if c, status, _ := tryWS(t, url, wsToken, ""); c != nil || status != http.StatusTooManyRequests {
		t.Fatalf("the place was given twice: %d", status)
	}
}

// jobID is the i-th job id of the tests' filters: 256 bytes, all alike
// but the last ones, so that comparing two costs what a scan would.
func jobID(i int) string { return fmt.Sprintf("%s%016d", strings.Repeat("J", 240), i) }

// jobsQuery is job= for the first n job ids.
func jobsQuery(n int) url.Values {
	q := url.Values{}
	for i := range n {
		q.Add("job", jobID(i))
	}
	return q
}

// filterQuery is a /ws query with n filter values: a store, a kind, and
// job ids for the rest.
func filterQuery(n int) string {
	q := jobsQuery(n - 2)
	q.Set("store", "s")
	q.Set("kind", string(jobs.KindCompact))
	return q.Encode()
}

// A watcher may have 100 filter values (the default), store, job and
// kind together: one more is refused with 400 too_many_filters.
func TestWatchFiltersCapped(t *testing.T) {
	_, url := startWSTokens(t)
	c, status, body := tryWS(t, url, wsToken, filterQuery(101))
	if c != nil {
		t.Fatal("a watcher with 101 filter values was accepted; want 400 too_many_filters")
	}
	if status != http.StatusBadRequest || body["error"] != "too_many_filters" {
		t.Fatalf("101 filter values: %d %v; want 400 too_many_filters", status, body)
	}
	if c, status, body = tryWS(t, url, wsToken, strings.Repeat("job=x&", 101)); c != nil || body["error"] != "too_many_filters" {
		t.Fatalf("one job id 101 times: %d %v; want too_many_filters (repeats count)", status, body)
	}
	c, status, body = tryWS(t, url, wsToken, filterQuery(100))
	if c == nil {
		t.Fatalf("100 filter values refused: %d %v", status, body)
	}
	pushtest.WaitLive(t, c)
}

// Matching is a set lookup: a watcher with 100 job ids matches an event
// about as fast as one with a single id (a scan of 100 ids would be tens
// of times slower), so filters do not slow delivery.
func TestWatchMatchCostDoesNotGrowWithFilters(t *testing.T) {
	s, url := startWSTokens(t)
	one, _, _ := tryWS(t, url, wsToken, jobsQuery(1).Encode())
	many, _, _ := tryWS(t, url, wsToken, jobsQuery(100).Encode())
	if one == nil || many == nil {
		t.Fatal("watchers refused")
	}
	pushtest.WaitLive(t, one)
	pushtest.WaitLive(t, many)
	byJobs := map[int]*watcher{}
	sessions, _ := s.hub.m.Sessions()
	for _, ss := range sessions {
		byJobs[len(ss.Request.URL.Query()["job"])] = watcherOf(ss)
	}
	w1, w100 := byJobs[1], byJobs[100]
	if w1 == nil || w100 == nil {
		t.Fatalf("watchers by job ids: %v", byJobs)
	}
	// An event about another job, with an id as long as theirs and alike
	// but for its end: a scan compares it with every id, to the end.
	e := jobs.Event{Type: jobs.EventJobProgress, Store: "s", JobID: jobID(1e9), Kind: jobs.KindCompact}
	if w1.match(e) || w100.match(e) {
		t.Fatal("an event about another job matches")
	}
	hit := e
	hit.JobID = jobID(98)
	if !w100.match(hit) {
		t.Fatal("an event about a watched job does not match")
	}
	var sink bool
	perMatch := func(w *watcher) float64 {
		const n = 20000
		best := math.Inf(1)
		for range 7 {
			t0 := time.Now()
			for range n {
				sink = w.match(e) != sink
			}
			best = min(best, float64(time.Since(t0).Nanoseconds())/n)
		}
		return best
	}
	d1, d100 := perMatch(w1), perMatch(w100)
	t.Logf("match: %.1f ns with 1 job id, %.1f ns with 100 (%.2fx)", d1, d100, d100/d1)
	if d100 > 3*d1 {
		t.Fatalf("matching with 100 job ids takes %.1f ns, %.1fx the %.1f ns with one: it scans them", d100, d100/d1, d1)
	}
}
