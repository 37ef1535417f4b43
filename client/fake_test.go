package client_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/jobs"
)

// fakeServer stands in for `storekeeper serve` in the examples and tests:
// two stores (orders, sessions), enqueues, job records, cancel, the
// history and /ws with filters, since= replay and stream.live. One runner
// goroutine runs the jobs in the order they were asked for (started, then
// succeeded), so what the examples print is always the same.
type fakeServer struct {
	URL string
	hs  *httptest.Server

	mu       sync.Mutex
	events   []jobs.Event // ids "1-0", "2-0", …
	records  map[string]*jobs.Record
	watchers map[*fakeWatcher]bool
	nextJob  int
	lastBody []byte // of the last enqueue
	lastType string // its Content-Type
	sinces   []string
	gets     chan string // the job ids of record reads, for tests that wait on one

	queue    chan string // jobs for the runner
	stop     chan struct{}
	runner   sync.WaitGroup
	handlers sync.WaitGroup // /ws connections
}

type fakeWatcher struct {
	conn                *websocket.Conn
	stores, kinds, jobs []string
}

func (w *fakeWatcher) wants(e jobs.Event) bool {
	if len(w.stores)+len(w.kinds)+len(w.jobs) == 0 {
		return true
	}
	return slices.Contains(w.stores, e.Store) || slices.Contains(w.kinds, string(e.Kind)) || slices.Contains(w.jobs, e.JobID)
}

var fakeStores = []string{"orders", "sessions"}

func newFakeServer() *fakeServer {
	s := &fakeServer{records: map[string]*jobs.Record{}, watchers: map[*fakeWatcher]bool{}, queue: make(chan string, 64), stop: make(chan struct{}), gets: make(chan string, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/admin/{kind}/{store}", s.enqueueOne)
	mux.HandleFunc("POST /api/admin/{kind}", s.enqueueAll)
	mux.HandleFunc("GET /api/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		rec, ok := s.records[r.PathValue("id")]
		if !ok {
			reply(w, http.StatusNotFound, map[string]string{"error": "unknown_job", "message": fmt.Sprintf("unknown job %q", r.PathValue("id"))})
			return
		}
		reply(w, http.StatusOK, rec)
		select {
		case s.gets <- rec.ID:
		default:
		}
	})
	mux.HandleFunc("GET /api/stores", func(w http.ResponseWriter, r *http.Request) {
		var out []map[string]any
		for _, st := range fakeStores {
			out = append(out, map[string]any{"name": st, "node": "node-1", "node_up": true, "paused": false, "backups": []any{},
				"stats": map[string]any{"name": st, "state": "open", "live_bytes": 64 << 20}, "health": []any{}})
		}
		reply(w, http.StatusOK, map[string]any{"stores": out})
	})
	mux.HandleFunc("GET /proxy-page/api/stores", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	})
	mux.HandleFunc("GET /ws", s.ws)
	s.hs = httptest.NewServer(mux)
	s.URL = s.hs.URL
	s.runner.Go(s.run)
	return s
}

// Close stops the runner, closes the WebSockets and the server, and waits
// for every goroutine the server started.
func (s *fakeServer) Close() {
	close(s.stop)
	s.runner.Wait()
	s.dropWatchers()
	s.hs.Close()
	s.handlers.Wait()
}

// dropWatchers closes every /ws connection, as a restarting server would.
func (s *fakeServer) dropWatchers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		w.conn.Close()
		delete(s.watchers, w)
	}
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *fakeServer) enqueueOne(w http.ResponseWriter, r *http.Request) {
	store := r.PathValue("store")
	if !slices.Contains(fakeStores, store) {
		reply(w, http.StatusNotFound, map[string]string{"error": "unknown_store", "message": fmt.Sprintf("unknown store %q", store)})
		return
	}
	s.noteBody(r)
	rec := s.enqueue(jobs.Kind(r.PathValue("kind")), store, "")
	s.queue <- rec.ID
	reply(w, http.StatusAccepted, map[string]any{"deduplicated": false, "job_id": rec.ID,
		"kind": r.PathValue("kind"), "store": store, "state": "pending", "queue": "default", "trigger": "manual", "actor": "ops"})
}

func (s *fakeServer) enqueueAll(w http.ResponseWriter, r *http.Request) {
	s.noteBody(r)
	batch := "b" + strconv.Itoa(len(s.records)+1)
	// The answer holds the records as enqueued, and the runner gets the
	// jobs only once all are: the output of the examples does not depend
	// on how the runner's goroutine is scheduled.
	var out []jobs.Record
	for _, st := range fakeStores {
		out = append(out, s.enqueue(jobs.Kind(r.PathValue("kind")), st, batch))
	}
	for _, rec := range out {
		s.queue <- rec.ID
	}
	reply(w, http.StatusAccepted, map[string]any{"batch_id": batch, "jobs": out})
}

func (s *fakeServer) noteBody(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastBody, s.lastType = b, r.Header.Get("Content-Type")
}

// enqueue makes a pending job, says so (job.enqueued) and returns its
// record as enqueued; the caller queues it for the runner.
func (s *fakeServer) enqueue(kind jobs.Kind, store, batch string) jobs.Record {
	s.mu.Lock()
	s.nextJob++
	id := "j" + strconv.Itoa(s.nextJob)
	s.records[id] = &jobs.Record{ID: id, Kind: kind, Store: store, Queue: "default", State: jobs.StatePending, Trigger: jobs.TriggerManual,
		Actor: "ops", BatchID: batch, MaxRetry: 3, Errors: []jobs.AttemptError{}, EnqueuedAt: fakeNow}
	s.publish(jobs.Event{Type: jobs.EventJobEnqueued, JobID: id, Kind: kind, Store: store, Trigger: jobs.TriggerManual, Actor: "ops"})
	rec := *s.records[id]
	s.mu.Unlock()
	return rec
}

var fakeNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// run starts and ends each queued job: the record changes and its event
// is published under one lock, as the real server's scripts do.
func (s *fakeServer) run() {
	for {
		var id string
		select {
		case <-s.stop:
			return
		case id = <-s.queue:
		}
		s.mu.Lock()
		r := s.records[id]
		r.State, r.Node, r.Attempts, r.StartedAt = jobs.StateActive, "node-1", 1, fakeNow
		s.publish(jobs.Event{Type: jobs.EventJobStarted, JobID: id, Kind: r.Kind, Store: r.Store, Node: "node-1", Attempt: 1, MaxRetry: 3})
		r.State, r.FinishedAt, r.Result = jobs.StateSucceeded, fakeNow, fakeResult(r.Kind)
		s.publish(jobs.Event{Type: jobs.EventJobSucceeded, JobID: id, Kind: r.Kind, Store: r.Store, Node: "node-1", Attempt: 1, MaxRetry: 3, Result: r.Result})
		s.mu.Unlock()
	}
}

func fakeResult(kind jobs.Kind) json.RawMessage {
	var v any
	switch kind {
	case jobs.KindCompact:
		v = jobs.CompactResult{Outcome: jobs.OutcomeCompacted, Decision: jobs.CompactDecision{Compact: true, Reason: "48 MiB reclaimable"},
			BytesBefore: 64 << 20, BytesAfter: 16 << 20}
	case jobs.KindBackup:
		v = jobs.BackupResult{Backup: jobs.BackupSummary{ID: "20260102T030405Z", CreatedAt: fakeNow, VerifiedAt: fakeNow}, Copied: 3, Shared: 9}
	default:
		v = map[string]any{}
	}
	b, _ := json.Marshal(v)
	return b
}

// publish appends e to the stream and sends it to the watchers it
// matches. s.mu is held.
func (s *fakeServer) publish(e jobs.Event) {
	e.ID, e.At = strconv.Itoa(len(s.events)+1)+"-0", fakeNow
	s.events = append(s.events, e)
	b, _ := json.Marshal(e)
	for w := range s.watchers {
		if w.wants(e) {
			_ = w.conn.WriteMessage(websocket.TextMessage, b)
		}
	}
}

// ws replays what since= asks for, says stream.live and subscribes the
// connection, all under one lock: no event falls between.
func (s *fakeServer) ws(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	q := r.URL.Query()
	fw := &fakeWatcher{conn: conn, stores: q["store"], kinds: q["kind"], jobs: q["job"]}
	s.mu.Lock()
	s.sinces = append(s.sinces, q.Get("since"))
	if since := q.Get("since"); since != "" {
		n, _ := strconv.Atoi(since[:len(since)-2])
		for _, e := range s.events[min(n, len(s.events)):] {
			if fw.wants(e) {
				b, _ := json.Marshal(e)
				_ = conn.WriteMessage(websocket.TextMessage, b)
			}
		}
	}
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"stream.live"}`))
	s.watchers[fw] = true
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			break
		}
	}
	s.mu.Lock()
	delete(s.watchers, fw)
	s.mu.Unlock()
	conn.Close()
}
