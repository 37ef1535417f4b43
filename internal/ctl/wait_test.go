package ctl

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/client"
	"storekeeper/internal/syncbuf"
	"storekeeper/jobs"
)

// fakeAPI is just enough of the API for `ctl compact a --wait`: the
// enqueue, the job's record and /ws, scripted by each test, so that a job
// can end where no real server would let a test put it (before its
// watcher is subscribed).
type fakeAPI struct {
	url    string
	mu     sync.Mutex
	answer jobs.Record // the enqueue's answer
	rec    jobs.Record // GET /api/jobs/{id}
	live   bool        // stream.live was sent
	early  bool        // the enqueue came before stream.live
	conns  chan *websocket.Conn
	posted chan struct{} // the enqueue was answered
	gets   chan struct{} // the record was read
}

func startFakeAPI(t *testing.T, answer jobs.Record) *fakeAPI {
	t.Helper()
	f := &fakeAPI{answer: answer, rec: answer, conns: make(chan *websocket.Conn, 4), posted: make(chan struct{}, 4), gets: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /api/admin/compact/a", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.early = f.early || !f.live
		f.mu.Unlock()
		reply(w, http.StatusAccepted, client.Enqueued{Record: f.answer})
		f.posted <- struct{}{}
	})
	mux.HandleFunc("GET /api/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		rec := f.rec
		f.mu.Unlock()
		reply(w, http.StatusOK, rec)
		select {
		case f.gets <- struct{}{}:
		default:
		}
	})
	up := websocket.Upgrader{}
	var handlers sync.WaitGroup
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		handlers.Go(func() { // answer pings and notice the close
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		})
		f.conns <- c
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.CloseClientConnections() // hijacked WebSockets are not closed by Close
		hs.Close()
		for {
			select {
			case c := <-f.conns:
				c.Close()
				continue
			default:
			}
			break
		}
		handlers.Wait()
	})
	f.url = hs.URL
	return f
}

// conn is the next /ws connection ctl makes.
func (f *fakeAPI) conn(t *testing.T) *websocket.Conn {
	t.Helper()
	select {
	case c := <-f.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("ctl did not connect to /ws within 10 s")
		return nil
	}
}

func (f *fakeAPI) setState(s jobs.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec.State = s
	f.rec.FinishedAt = time.Now()
}

func (f *fakeAPI) sendLive(t *testing.T, c *websocket.Conn) {
	t.Helper()
	f.mu.Lock()
	f.live = true
	f.mu.Unlock()
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"stream.live"}`)); err != nil {
		t.Fatal(err)
	}
}

// ctlWait runs `ctl compact a --wait` against f in the background.
func (f *fakeAPI) ctlWait(ctx context.Context) (done chan int, out, errOut *syncbuf.Buffer) {
	out, errOut = &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done = make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--server", f.url, "--token", "t", "compact", "a", "--wait"}, out, errOut)
	}()
	return done, out, errOut
}

// exitOf waits for ctl's exit status; a ctl that does not exit hangs.
func exitOf(t *testing.T, done chan int, out, errOut *syncbuf.Buffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("ctl --wait still waits after 10 s, on a job that has ended\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		return 0
	}
}

func compactA(state jobs.State) jobs.Record {
	return jobs.Record{ID: "j1", Kind: jobs.KindCompact, Store: "a", State: state, Errors: []jobs.AttemptError{}}
}

// ctl --wait waits for stream.live before it enqueues, and a job whose
// events are all past before that (the enqueue answers it ended) ends
// the wait at once, with its status.
func TestCtlWaitJobEndedBeforeLive(t *testing.T) {
	for _, c := range []struct {
		state jobs.State
		code  int
		out   string
	}{
		{jobs.StateSucceeded, 0, "compact a j1: succeeded"},
		{jobs.StateFailed, 1, "compact a j1: failed: disk full"},
		{jobs.StateCanceled, 1, "compact a j1: canceled by ops"},
	} {
		t.Run(string(c.state), func(t *testing.T) {
			ended := compactA(c.state)
			ended.FinishedAt = time.Now()
			switch c.state {
			case jobs.StateFailed:
				ended.Reason = "disk full"
			case jobs.StateCanceled:
				ended.Reason = "canceled by ops"
			}
			f := startFakeAPI(t, ended)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done, out, errOut := f.ctlWait(ctx)
			ws := f.conn(t)
			// Give a ctl that would not wait for stream.live the time to
			// enqueue: the enqueue handler notes one that comes before it,
			// however late.
			select {
			case <-f.posted:
			case <-time.After(200 * time.Millisecond):
			}
			f.sendLive(t, ws)
			code := exitOf(t, done, out, errOut)
			f.mu.Lock()
			early := f.early
			f.mu.Unlock()
			if early {
				t.Fatal("ctl enqueued before its watcher was subscribed")
			}
			if code != c.code || !strings.Contains(out.String(), c.out) {
				t.Fatalf("exit %d; want %d and %q\nstdout:\n%s\nstderr:\n%s", code, c.code, c.out, out.String(), errOut.String())
			}
		})
	}
}

// The connection drops after the enqueue; the job ends while ctl is
// reconnecting, before the new connection is subscribed, so its end is
// an event no watcher gets. ctl reads the record once the new connection
// is live, not when it is dialled (too early: the record still says
// active), and exits with the job's status.
func TestCtlWaitJobEndedWhileReconnecting(t *testing.T) {
	f := startFakeAPI(t, compactA(jobs.StateActive))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done, out, errOut := f.ctlWait(ctx)
	first := f.conn(t)
	f.sendLive(t, first)
	select {
	case <-f.posted:
	case <-time.After(10 * time.Second):
		t.Fatal("ctl did not enqueue after stream.live")
	}
	first.Close() // dropped: ctl reconnects
	second := f.conn(t)
	// A ctl that reads the record as soon as it has reconnected reads it
	// now, before the job ends: it must not rely on that read.
	select {
	case <-f.gets:
	case <-time.After(time.Second):
	}
	f.setState(jobs.StateSucceeded) // ended, and no watcher was subscribed to see it
	f.sendLive(t, second)
	if code := exitOf(t, done, out, errOut); code != 0 || !strings.Contains(out.String(), "compact a j1: succeeded") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
}

// A server that never says stream.live (older than this ctl): --wait
// warns and goes on after liveWait, and follows the job's events.
func TestCtlWaitServerWithoutLive(t *testing.T) {
	defer func(d time.Duration) { liveWait = d }(liveWait)
	liveWait = 100 * time.Millisecond // a wall-clock timeout is what is under test
	f := startFakeAPI(t, compactA(jobs.StatePending))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done, out, errOut := f.ctlWait(ctx)
	ws := f.conn(t)
	select {
	case <-f.posted:
	case <-time.After(10 * time.Second):
		t.Fatal("ctl did not enqueue without stream.live")
	}
	ev, _ := json.Marshal(jobs.Event{ID: "1-1", Type: jobs.EventJobSucceeded, JobID: "j1", Kind: jobs.KindCompact, Store: "a", At: time.Now()})
	if err := ws.WriteMessage(websocket.TextMessage, ev); err != nil {
		t.Fatal(err)
	}
	code := exitOf(t, done, out, errOut)
	if code != 0 || !strings.Contains(errOut.String(), "storekeeper: the server did not confirm the subscription (stream.live) within 100ms; going on without\n") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
}
