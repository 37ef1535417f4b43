package e2e

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/pushtest"
	"storekeeper/jobs"
)

// watcherBuffer is api/ws.go's sessionBuffer: melody's per-watcher send
// buffer, in events.
const watcherBuffer = 1024

// A since= replay three times longer than a watcher's send buffer, read
// by a slow watcher, arrives whole: every event once and in order, then
// the live events that came during the replay, with one stream.live after
// the replay, and no stream.dropped (a replay is paced by the watcher; it
// has no reason to drop).
func TestReplayLongerThanBuffer(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	const (
		replayed = 3 * watcherBuffer
		live     = 200
	)
	// 12 MiB in all: more than melody's buffer (1024 events, 4 MiB here)
	// and the kernel's socket buffers (4 MiB at most on the sending side)
	// hold together, so a replay that did not wait for the watcher would
	// have to drop.
	pad := strings.Repeat("x", 4000)
	appendEvents := func(from, n int) {
		t.Helper()
		pipe := e.rdb.Pipeline()
		for i := from; i < from+n; i++ {
			args, _ := keyspace.AppendArgs(keyspace.EventsStream, 100000, jobs.Event{Type: jobs.EventJobProgress, Store: "replay", Phase: pad, Done: int64(i), At: time.Now()})
			pipe.XAdd(ctx, args)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	since := "0"
	if last, err := e.rdb.XRevRangeN(ctx, keyspace.EventsStream, "+", "-", 1).Result(); err != nil {
		t.Fatal(err)
	} else if len(last) == 1 {
		since = last[0].ID
	}
	appendEvents(0, replayed)

	c, _, err := dial(t, e, "store=replay&since="+since, http.Header{"Authorization": {"Bearer " + viewerToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	appendEvents(replayed, live) // during the replay: handed over after it

	var lastID string
	next, lives := 0, 0
	for next < replayed+live {
		if next < watcherBuffer {
			// A real wall-clock wait: the slow watcher is what is under
			// test, a millisecond per event while the replay could fill
			// its buffer many times over.
			time.Sleep(time.Millisecond)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("after %d of %d events, nothing more came and nothing said why", next, replayed+live)
			}
			t.Fatalf("after %d events: %v", next, err)
		}
		switch m["type"] {
		case "stream.dropped", "stream.gap":
			t.Fatalf("after %d events: %v", next, m)
		case "stream.live": // once, after the replay
			if lives++; lives > 1 || next < replayed {
				t.Fatalf("stream.live number %d after %d events", lives, next)
			}
			continue
		case string(jobs.EventJobProgress):
		default:
			t.Fatalf("unexpected frame %v", m)
		}
		id, _ := m["id"].(string)
		if done, _ := m["done"].(float64); int(done) != next {
			t.Fatalf("event %d is %v (done %v): out of order, duplicated or lost", next, id, m["done"])
		}
		if lastID != "" && jobs.CompareStreamIDs(id, lastID) <= 0 {
			t.Fatalf("event id %s after %s", id, lastID)
		}
		lastID = id
		next++
	}
	if lives == 0 { // the live events all came from the replay's pending: it is next
		if more := pushtest.WaitLive(t, c); len(more) != 0 {
			t.Fatalf("after every event, before stream.live: %v", more)
		}
	}
}
