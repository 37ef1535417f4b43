package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/jobs"
)

// webhookSink is the notification receiver every node delivers to.
type webhookSink struct {
	srv *http.Server
	ln  net.Listener
	mu  sync.Mutex
	got []jobs.Notification
}

func newWebhookSink() *webhookSink { return &webhookSink{} }

func (w *webhookSink) start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.ln = ln
	w.srv = &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var n jobs.Notification
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&n); err == nil {
			w.mu.Lock()
			w.got = append(w.got, n)
			w.mu.Unlock()
		}
		rw.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = w.srv.Serve(ln) }()
	return nil
}

func (w *webhookSink) url() string {
	if w.ln == nil {
		return "http://127.0.0.1:1/unset"
	}
	return "http://" + w.ln.Addr().String() + "/hook"
}

func (w *webhookSink) stop() {
	if w.srv != nil {
		_ = w.srv.Close()
	}
}

func (w *webhookSink) notifications() []jobs.Notification {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// accepted is a job the API answered 202 for.
type accepted struct {
	ID    string
	Store string
	Kind  jobs.Kind
	At    time.Time
}

// load drives the cluster through its API nodes, as operators, scripts
// and dashboards would, and records what the API promised.
type load struct {
	c   *Cluster
	mu  sync.Mutex
	rng *rand.Rand

	accepted  map[string]accepted
	actions   map[string]int // what was sent, by action
	answers   map[string]int // action and status
	wrong     []string       // answers no fault excuses (a 500, a 2xx for an unknown store)
	lat       []time.Duration
	faultLat  []time.Duration
	sessions  []*watchSession
	ctlRuns   map[string]int
	faulting  func() bool
	http      *http.Client
	storeList []string
}

func newLoad(c *Cluster, seed int64, faulting func() bool) *load {
	l := &load{c: c, rng: rand.New(rand.NewPCG(uint64(seed), 0x5eed)), accepted: map[string]accepted{},
		actions: map[string]int{}, answers: map[string]int{}, ctlRuns: map[string]int{}, faulting: faulting,
		http: &http.Client{Timeout: 15 * time.Second}}
	for s := range c.stores() {
		l.storeList = append(l.storeList, s)
	}
	slices.Sort(l.storeList)
	return l
}

func (l *load) intn(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.IntN(n)
}

func (l *load) api() *apiNode { return l.c.apis[l.intn(len(l.c.apis))] }

func (l *load) store() string { return l.storeList[l.intn(len(l.storeList))] }

// call sends one request and records its latency and answer.
func (l *load) call(ctx context.Context, action, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+l.api().addr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+l.c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := l.http.Do(req)
	d := time.Since(start)
	status := 0
	var out []byte
	if err == nil {
		out, _ = io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		status = resp.StatusCode
	}
	l.mu.Lock()
	l.actions[action]++
	l.answers[fmt.Sprintf("%s %d", action, status)]++
	if err == nil {
		if l.faulting() {
			l.faultLat = append(l.faultLat, d)
		} else {
			l.lat = append(l.lat, d)
		}
	}
	if status >= 500 && status != http.StatusServiceUnavailable && status != http.StatusBadGateway && status != http.StatusGatewayTimeout {
		l.wrong = append(l.wrong, fmt.Sprintf("%s %s %s: %d %s", action, method, path, status, trim(out)))
	}
	l.mu.Unlock()
	return status, out, err
}

func trim(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

func (l *load) accept(id, store string, kind jobs.Kind) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.accepted[id]; !ok {
		l.accepted[id] = accepted{ID: id, Store: store, Kind: kind, At: time.Now()}
	}
}

func (l *load) wrongf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wrong = append(l.wrong, fmt.Sprintf(format, a...))
}

// enqueue sends one maintenance request and records a 202.
func (l *load) enqueue(ctx context.Context, kind jobs.Kind, store string, body any) (string, int) {
	status, out, err := l.call(ctx, "enqueue-"+string(kind), "POST", "/api/admin/"+string(kind)+"/"+store, body)
	if err != nil || status != http.StatusAccepted {
		return "", status
	}
	var r struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.JobID == "" {
		l.wrongf("enqueue %s %s: 202 without a job id: %s", kind, store, trim(out))
		return "", status
	}
	l.accept(r.JobID, store, kind)
	return r.JobID, status
}

// step is one action, drawn by weight.
func (l *load) step(ctx context.Context) {
	switch n := l.intn(100); {
	case n < 14:
		l.enqueue(ctx, jobs.KindCompact, l.store(), map[string]any{"force": l.intn(2) == 0})
	case n < 30:
		l.enqueue(ctx, jobs.KindBackup, l.store(), nil)
	case n < 42:
		l.enqueue(ctx, jobs.KindVerify, l.store(), map[string]any{"deep": l.intn(3) == 0})
	case n < 46:
		l.enqueue(ctx, jobs.KindRestore, l.store(), nil)
	case n < 52: // the same request twice at once: one job
		s := l.store()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { l.enqueue(ctx, jobs.KindBackup, s, nil) })
		}
		wg.Wait()
	case n < 56:
		status, out, err := l.call(ctx, "enqueue-unknown-store", "POST", "/api/admin/backup/no-such-store", nil)
		if err == nil && status/100 == 2 {
			l.wrongf("a backup of an unknown store was accepted: %d %s", status, trim(out))
		}
	case n < 64:
		l.mu.Lock()
		var recent []string
		for id, a := range l.accepted {
			if time.Since(a.At) < 5*time.Second {
				recent = append(recent, id)
			}
		}
		l.mu.Unlock()
		if len(recent) > 0 {
			slices.Sort(recent)
			_, _, _ = l.call(ctx, "cancel", "DELETE", "/api/jobs/"+recent[l.intn(len(recent))], nil)
		}
	case n < 70:
		kind := []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify}[l.intn(3)]
		status, out, err := l.call(ctx, "batch-"+string(kind), "POST", "/api/admin/"+string(kind), nil)
		if err == nil && status == http.StatusAccepted {
			var r struct {
				Jobs []struct {
					JobID string `json:"job_id"`
					Store string `json:"store"`
				} `json:"jobs"`
			}
			if json.Unmarshal(out, &r) == nil {
				for _, j := range r.Jobs {
					l.accept(j.JobID, j.Store, kind)
				}
			}
		}
	case n < 97:
		path := []string{"/api/dashboard", "/", "/api/stores", "/api/history?limit=50", "/api/jobs"}[l.intn(5)]
		_, _, _ = l.call(ctx, "read "+path, "GET", path, nil)
	default:
		l.ctlWait(ctx)
	}
}

// ctlWait runs `storekeeper ctl backup <store> --wait` as a script would:
// exit 0 (done) or 1 (an API or network error, a failed job); never 2.
func (l *load) ctlWait(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	store := l.store()
	cmd := exec.CommandContext(cctx, l.c.bin, "ctl", "--server", "http://"+l.api().addr, "--token", l.c.token, "--json", "backup", store, "--wait")
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	l.mu.Lock()
	l.ctlRuns[fmt.Sprintf("exit %d", code)]++
	l.mu.Unlock()
	if code == 2 {
		l.wrongf("ctl backup %s --wait: usage error (exit 2): %s", store, trim(out))
	}
	var r struct {
		JobID string `json:"job_id"`
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		if json.Unmarshal(line, &r) == nil && r.JobID != "" {
			l.accept(r.JobID, store, jobs.KindBackup)
			break
		}
	}
}

// run sends load from workers goroutines until ctx ends.
func (l *load) run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				l.step(ctx)
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(10+l.intn(60)) * time.Millisecond):
				}
			}
		})
	}
	for i := range 3 {
		wg.Go(func() { l.watch(ctx, i) })
	}
	wg.Wait()
}

// watchSession is one WebSocket connection of a watcher: what it asked
// to resume from and what it got.
type watchSession struct {
	Since  string
	IDs    []string // events, in order
	Gap    bool     // a stream.gap or stream.dropped frame
	Err    string
	Filter string
}

// watch keeps one watcher connected, dropping the connection at random
// and resuming from the last event it saw (since=).
func (l *load) watch(ctx context.Context, i int) {
	last := ""
	for ctx.Err() == nil {
		s := &watchSession{Since: last}
		if i == 2 { // one watcher follows one store
			s.Filter = l.storeList[0]
		}
		l.session(ctx, s, time.Duration(1000+l.intn(6000))*time.Millisecond)
		if n := len(s.IDs); n > 0 {
			last = s.IDs[n-1]
		}
		l.mu.Lock()
		l.sessions = append(l.sessions, s)
		l.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(l.intn(500)) * time.Millisecond):
		}
	}
}

func (l *load) session(ctx context.Context, s *watchSession, life time.Duration) {
	q := url.Values{}
	if s.Since != "" {
		q.Set("since", s.Since)
	}
	if s.Filter != "" {
		q.Set("store", s.Filter)
	}
	u := "ws://" + l.api().addr + "/ws?" + q.Encode()
	h := http.Header{"Authorization": {"Bearer " + l.c.token}}
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	conn, resp, err := d.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil {
			s.Err = fmt.Sprintf("dial: %d", resp.StatusCode)
		} else {
			s.Err = "dial: " + err.Error()
		}
		return
	}
	defer conn.Close()
	deadline := time.Now().Add(life)
	for {
		_ = conn.SetReadDeadline(deadline)
		_, msg, err := conn.ReadMessage()
		if err != nil {
			if time.Now().Before(deadline) {
				s.Err = "read: " + err.Error()
			}
			return
		}
		var e jobs.Event
		if json.Unmarshal(msg, &e) != nil {
			continue
		}
		switch e.Type {
		case jobs.FrameGap, jobs.FrameDropped:
			s.Gap = true
		case jobs.FrameLive:
		default:
			if e.ID != "" {
				s.IDs = append(s.IDs, e.ID)
			}
		}
	}
}
