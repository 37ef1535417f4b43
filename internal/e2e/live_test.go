package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/pushtest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// appendEvent appends one job.progress event for store with done, and
// returns its id.
func (e *env) appendEvent(store string, done int) string {
	e.t.Helper()
	id, err := jobsdb.Append(e.t.Context(), e.rdb, keyspace.EventsStream, 100000, jobs.Event{Type: jobs.EventJobProgress, Store: store, Phase: "live", Done: int64(done), At: time.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// lastEventID is the id of the newest event, "0" when there is none.
func (e *env) lastEventID() string {
	e.t.Helper()
	last, err := e.rdb.XRevRangeN(e.t.Context(), keyspace.EventsStream, "+", "-", 1).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	if len(last) == 0 {
		return "0"
	}
	return last[0].ID
}

// readUntil reads c's frames until the event id (done == want) appended
// after stream.live. A live watcher may also get events appended before
// it connected that the server's tailer had not handed on yet (older ids);
// anything else before it fails the test.
func readUntil(t *testing.T, c *websocket.Conn, id string, want int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for the event done=%d appended after stream.live: %v", want, err)
		}
		got, _ := m["id"].(string)
		if m["type"] == string(jobs.EventJobProgress) && got != "" && jobs.CompareStreamIDs(got, id) < 0 {
			continue
		}
		if m["type"] != string(jobs.EventJobProgress) || m["done"] != float64(want) {
			t.Fatalf("want the event done=%d, got %v", want, m)
		}
		return
	}
}

// A watcher is subscribed when it reads stream.live, not when its
// handshake returns: an event appended the moment stream.live is read
// reaches it, with no sleep in between. stream.live comes exactly once:
// first when there is nothing to replay, after the whole replay with
// since=. Round after round, as the race it closes is a narrow one.
func TestWatcherLive(t *testing.T) {
	e := setup(t)
	auth := http.Header{"Authorization": {"Bearer " + viewerToken}}
	since := e.lastEventID()
	var replay []string // ids after since, for store "live"
	for i := range 3 {
		replay = append(replay, e.appendEvent("live", i))
	}
	for round := range 20 {
		// No since: stream.live is the first frame.
		c, _, err := dial(t, e, "store=live", auth)
		if err != nil {
			t.Fatal(err)
		}
		if before := pushtest.WaitLive(t, c); len(before) != 0 {
			t.Fatalf("round %d: frames before stream.live with nothing to replay: %v", round, before)
		}
		done := 1000 + round
		id := e.appendEvent("live", done)
		replay = append(replay, id)
		readUntil(t, c, id, done)
		c.Close()

		// since=: the whole replay, in order, then stream.live, then what
		// is appended next, and no second stream.live.
		c, _, err = dial(t, e, "store=live&since="+since, auth)
		if err != nil {
			t.Fatal(err)
		}
		before := pushtest.WaitLive(t, c)
		var got []string
		for _, m := range before {
			got = append(got, fmt.Sprint(m["id"]))
		}
		if fmt.Sprint(got) != fmt.Sprint(replay) {
			t.Fatalf("round %d: before stream.live %v, want the replay %v", round, before, replay)
		}
		done = 2000 + round
		id = e.appendEvent("live", done)
		replay = append(replay, id)
		readUntil(t, c, id, done)
		c.Close()
	}

	// Through the API: a job enqueued the moment the watcher is live is
	// followed from job.enqueued to its end, with no stream.live again.
	c, _, err := dial(t, e, "store=orders", auth)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pushtest.WaitLive(t, c)
	id := e.do("POST", "/api/admin/verify/orders", operatorToken, nil).body["job_id"]
	var types []string
	for {
		m := readEvent(t, c)
		if m["type"] == "stream.live" {
			t.Fatalf("a second stream.live after %v", types)
		}
		if m["job_id"] == id {
			types = append(types, fmt.Sprint(m["type"]))
		}
		if m["job_id"] == id && m["type"] == "job.succeeded" {
			break
		}
	}
	if types[0] != "job.enqueued" {
		t.Fatalf("the job's events began with %v", types)
	}
}

// A replay that cannot read the stream (Redis is down) says so with
// stream.gap from where it stood, then goes live: never silence.
func TestReplayFailureSaysGap(t *testing.T) {
	e := setup(t)
	since := e.lastEventID()
	e.appendEvent("orders", 1)
	e.redis.Stop()
	c, _, err := dial(t, e, "since="+since, http.Header{"Authorization": {"Bearer " + viewerToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := pushtest.WaitLive(t, c)
	if len(before) != 1 || before[0]["type"] != "stream.gap" || before[0]["since"] != since {
		t.Fatalf("before stream.live with Redis down: %v; want one stream.gap since %s", before, since)
	}
}
