package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
)

const wsToken = "ws-test-viewer-token-0123"

// startWS serves the API on rdb, its tailer started now, and returns it
// with its /ws URL.
func startWS(t *testing.T, rdb redis.UniversalClient) (*Server, string) {
	t.Helper()
	return startWSWith(t, rdb, "v:viewer:"+wsToken)
}

// startWSWith is startWS with the given --tokens list.
func startWSWith(t *testing.T, rdb redis.UniversalClient, tokenList string) (*Server, string) {
	t.Helper()
	tokens, err := ParseTokens(tokenList)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(t.Context())
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close() })
	return s, "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
}

func dialWS(t *testing.T, url, query string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url+"?"+query, http.Header{"Authorization": {"Bearer " + wsToken}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func appendEvents(t *testing.T, rdb redis.UniversalClient, n int, pad string) []string {
	t.Helper()
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, n)
	for i := range n {
		args, _ := keyspace.AppendArgs(keyspace.EventsStream, 100000, jobs.Event{Type: jobs.EventJobProgress, Store: "s", Phase: pad, Done: int64(i), At: time.Now()})
		cmds[i] = pipe.XAdd(t.Context(), args)
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	return ids
}

// A replay that fails part way (an entry it cannot decode on its second
// page) sends what it read, then stream.gap from the last position it
// reached, then stream.live, and live events follow: never silence.
func TestReplayErrorSaysGapFromWhereItStopped(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ids := appendEvents(t, rdb, replayPage+100, "")
	if err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: keyspace.EventsStream, Values: []any{keyspace.StreamField, "not json"}}).Err(); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, rdb, 5, "")
	_, url := startWS(t, rdb) // its tailer starts after the bad entry
	c := dialWS(t, url, "since=0")
	before := pushtest.WaitLive(t, c)
	if len(before) != replayPage+1 {
		t.Fatalf("%d frames before stream.live; want the first page (%d) and stream.gap", len(before), replayPage)
	}
	for i, m := range before[:replayPage] {
		if m["id"] != ids[i] {
			t.Fatalf("replayed frame %d: %v, want event %s", i, m, ids[i])
		}
	}
	if g := before[replayPage]; g["type"] != "stream.gap" || g["since"] != ids[replayPage-1] {
		t.Fatalf("after the first page: %v; want stream.gap since %s", g, ids[replayPage-1])
	}
	next := appendEvents(t, rdb, 1, "")[0]
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m map[string]any
	if err := c.ReadJSON(&m); err != nil || m["id"] != next {
		t.Fatalf("after stream.live: %v %v; want the event %s", m, err, next)
	}
}

// The sender's set holds the connected watchers: each joins it before
// its stream.live, and leaves it when it disconnects.
func TestWatcherSetFollowsConnections(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	s, url := startWS(t, rdb)
	var conns []*websocket.Conn
	for _, q := range []string{"", "store=a", "since=0"} {
		c := dialWS(t, url, q)
		pushtest.WaitLive(t, c)
		conns = append(conns, c)
	}
	if n := s.hub.size(); n != 3 {
		t.Fatalf("%d watchers in the set; want 3", n)
	}
	conns[0].Close()
	conns[2].Close()
	// The server learns of a close when its read of the connection fails.
	if !testsignal.Poll(5*time.Second, func() bool { return s.hub.size() == 1 }) {
		t.Fatalf("%d watchers in the set 5 s after two of three disconnected", s.hub.size())
	}
	s.Close()
	if n := s.hub.size(); n != -1 {
		t.Fatalf("the sender still answers after Close: %d", n)
	}
}

// Close waits for the replays it started: none runs once it returns, even
// one blocked on a watcher that stopped reading.
func TestCloseEndsReplays(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	appendEvents(t, rdb, 8000, strings.Repeat("x", 4000)) // 32 MB: more than melody's and the kernel's buffers hold
	s, url := startWS(t, rdb)
	c := dialWS(t, url, "since=0")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err != nil { // the replay is under way; then read no more
		t.Fatal(err)
	}
	// Until the replay finds the watcher's buffer full: it waits for room.
	blocked := func() bool {
		sessions, _ := s.hub.m.Sessions()
		for _, ss := range sessions {
			if w := watcherOf(ss); w != nil {
				w.mu.Lock()
				full := w.full
				w.mu.Unlock()
				if full {
					return true
				}
			}
		}
		return false
	}
	testsignal.WaitFor(t, "the replay finding the watcher's buffer full", blocked)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close did not return within 10 s")
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "(*hub).replay(") {
		t.Fatalf("a replay still runs after Close:\n%s", stacks)
	}
}

// heldXRead holds each XREAD before it reaches Redis until the test lets
// it go, and says how many entries it read once Redis answered.
type heldXRead struct {
	arrived chan struct{} // an XREAD is held
	proceed chan struct{} // let it go
	read    chan int      // how many entries it found (0: its block ran out)
}

func newHeldXRead() *heldXRead {
	return &heldXRead{arrived: make(chan struct{}), proceed: make(chan struct{}), read: make(chan int)}
}

func (*heldXRead) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *heldXRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "xread" {
			return next(ctx, cmd)
		}
		select {
		case h.arrived <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-h.proceed:
		case <-ctx.Done():
			return ctx.Err()
		}
		err := next(ctx, cmd)
		n := 0
		if xc, ok := cmd.(*redis.XStreamSliceCmd); ok {
			for _, st := range xc.Val() {
				n += len(st.Messages)
			}
		}
		select {
		case h.read <- n:
		case <-ctx.Done():
		}
		return err
	}
}
func (*heldXRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// recv receives from ch, failing the test after testsignal.Timeout.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testsignal.Timeout):
		t.Fatalf("no %s", what)
		var zero T
		return zero
	}
}

// stream.live holds however late the tailer's reads reach Redis: an event
// appended after it reaches the watcher, whether it comes before the
// tailer's first read or between two reads that found nothing. (Reading
// from "$" would skip both.) The tailer's reads are held before they
// reach Redis, and each event is appended while one is held.
func TestLiveWhileTheTailerIsLate(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	held := newHeldXRead()
	rdb.AddHook(held)
	_, url := startWS(t, rdb)
	c := dialWS(t, url, "")
	pushtest.WaitLive(t, c)
	// Round 0: before the tailer's first read reaches Redis.
	recv(t, "first read", held.arrived)
	id := appendEvents(t, rdb, 1, "")[0]
	held.proceed <- struct{}{}
	if n := recv(t, "first read's answer", held.read); n != 1 {
		t.Fatalf("the first read found %d entries, want the event", n)
	}
	readID := func(round int, id string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(testsignal.Timeout))
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil || m["id"] != id {
			t.Fatalf("round %d: %v %v; want the event %s appended after stream.live", round, m, err, id)
		}
	}
	readID(0, id)
	// Round 1: a read that found nothing (its block ran out in Redis),
	// then the event before the next read reaches Redis.
	recv(t, "second read", held.arrived)
	held.proceed <- struct{}{}
	if n := recv(t, "second read's answer", held.read); n != 0 {
		t.Fatalf("the second read found %d entries, want none", n)
	}
	recv(t, "third read", held.arrived)
	id = appendEvents(t, rdb, 1, "")[0]
	held.proceed <- struct{}{}
	if n := recv(t, "third read's answer", held.read); n != 1 {
		t.Fatalf("the third read found %d entries, want the event", n)
	}
	readID(1, id)
}
