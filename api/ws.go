package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/olahol/melody"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// WebSocket watchers (docs/design.md, "Melody — facts measured"): one tailer
// per process reads the events stream and hands each event to one sender
// goroutine through a buffered channel; the sender writes to each matching
// watcher's buffer without waiting. A watcher whose buffer is full loses
// that event only for itself; it is told how many it missed
// (stream.dropped) as soon as it has room, and it is disconnected if it
// stays stuck. A watcher that missed events reconnects with since=.
//
// The sender keeps its own set of watchers: melody writes the 101 before
// it registers the session, and offers no hook once it has, so its
// sessions say nothing about which events a new watcher will get. A new
// watcher joins the set through the sender itself (ops), so every event
// the sender handles from then on reaches it; once it is in the set and
// its since= replay is written, it gets one {"type":"stream.live"}: every
// event appended after the client read that frame reaches it.
//
// A since= replay is different: it reads the stream at the watcher's pace,
// so it waits for room in the buffer instead of dropping, however long the
// replay (a watcher too slow for it is disconnected like a stuck one). A
// replay that cannot read the stream says so with stream.gap (since: the
// last position it reached) before it goes live.
//
// What watchers may cost is bounded (ws_limits.go): so many per token on
// each process, so many filter values each, and a watcher's filters are
// sets, so matching an event does not grow with them.

const (
	sessionBuffer = 1024             // melody's per-session buffer
	stuckFor      = 10 * time.Second // dropping for this long: disconnected
	replayPage    = 500
)

// streamLive is the frame that tells a watcher it is subscribed.
var streamLive = []byte(`{"type":"` + string(jobs.FrameLive) + `"}`)

// watcher is one session's filters and position.
type watcher struct {
	ss    *melody.Session
	conn  *hijackRecorder
	room  chan struct{} // melody sent one of its messages, or it closed: the replay may write again
	since string        // the since= it connected with; "" for none
	f     filters       // its store=, job= and kind= values
	idx   int           // its place in the sender's set, -1 when not in it (the sender's alone)

	mu sync.Mutex
	// last is the id of the last event sent while the replay may be ahead
	// of the tailer; "" before any, and once the sender's events are all
	// newer (no comparison needed then).
	last      string
	replaying bool     // live events wait in pending until the replay is done
	full      bool     // while replaying: a write found the buffer full
	pending   [][]byte // live events that arrived during the replay, with ids
	pendIDs   []string
	dropped   int       // events lost since the last stream.dropped
	dropSince time.Time // when the current run of drops began
}

func (w *watcher) match(e jobs.Event) bool { return w.f.match(e) }

type live struct {
	ev  jobs.Event
	raw []byte
}

// watcherOp asks the sender to add a watcher to its set, or to remove
// it, or (size) how many it holds.
type watcherOp struct {
	w      *watcher
	remove bool
	size   chan<- int
}

type hub struct {
	s       *Server
	m       *melody.Melody
	events  chan live
	ops     chan watcherOp
	quit    chan struct{} // closed when the sender has stopped
	placed  chan struct{} // closed when the tailer knows where it reads from
	started atomic.Bool
	slots   *tokenSlots // each token's open watchers (ws_limits.go)
	filters int         // the most filter values a watcher may have; < 0: no cap
	stop    context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	stopped chan struct{} // closed when Stop's wait is over: melody's hub is closed

	// The sessions, for Stop: melody's own Close races a session that is
	// ending (its unregister can be left waiting forever on a hub that
	// quit), so Stop ends the sessions first, waits for every serve to
	// return, and only then closes melody.
	mu       sync.Mutex
	stopping bool                         // Stop began: no new session
	live     map[*melody.Session]*watcher // connected (HandleConnect until HandleDisconnect)
	conns    sync.WaitGroup               // serve calls inside melody
}

func newHub(s *Server) *hub {
	m := melody.New()
	m.Config.MessageBufferSize = sessionBuffer
	m.Config.MaxMessageSize = 4096
	m.Upgrader.CheckOrigin = s.checkOrigin
	h := &hub{s: s, m: m, events: make(chan live, 4096), ops: make(chan watcherOp), quit: make(chan struct{}), placed: make(chan struct{}),
		stopped: make(chan struct{}), live: map[*melody.Session]*watcher{},
		slots:   &tokenSlots{max: limitOr(s.cfg.MaxWatchersPerToken, DefaultMaxWatchersPerToken), open: map[string]int{}},
		filters: limitOr(s.cfg.MaxWatchFilters, DefaultMaxWatchFilters)}
	// Only count here: closing a session inside this hook recurses.
	m.HandleError(func(ss *melody.Session, err error) {
		if errors.Is(err, melody.ErrMessageBufferFull) {
			if w := watcherOf(ss); w != nil {
				w.mu.Lock()
				if w.replaying { // only the replay writes now: it waits and sends it again
					w.full = true
					w.mu.Unlock()
					return
				}
				if w.dropSince.IsZero() {
					w.dropSince = time.Now()
				}
				w.dropped++
				w.mu.Unlock()
			}
			s.metrics.wsDropped.Inc()
		}
	})
	// melody calls this before it starts the session's writer; the session
	// may not be in melody's hub yet, which does not matter: the sender
	// delivers to its own set.
	m.HandleConnect(func(ss *melody.Session) {
		s.metrics.wsWatchers.Inc()
		w := watcherOf(ss)
		if w == nil {
			return
		}
		w.ss = ss // before the sender or a replay can see w
		h.mu.Lock()
		stopping := h.stopping
		if !stopping {
			h.live[ss] = w
		}
		h.mu.Unlock()
		if stopping {
			_ = ss.CloseWithMsg(melody.FormatCloseMessage(melody.CloseGoingAway, "server shutting down"))
			return
		}
		if !h.started.Load() {
			_ = ss.CloseWithMsg(melody.FormatCloseMessage(melody.CloseInternalServerErr, "events are not served yet"))
			return
		}
		select {
		case h.ops <- watcherOp{w: w}:
		case <-h.quit:
			_ = ss.CloseWithMsg(melody.FormatCloseMessage(melody.CloseGoingAway, "server shutting down"))
		}
	})
	m.HandleDisconnect(func(ss *melody.Session) {
		s.metrics.wsWatchers.Dec()
		w := watcherOf(ss)
		if w == nil {
			return
		}
		h.mu.Lock()
		delete(h.live, ss)
		h.mu.Unlock()
		w.madeRoom() // a replay waiting for room finds the session closed
		if h.started.Load() {
			select {
			case h.ops <- watcherOp{w: w, remove: true}:
			case <-h.quit:
			}
		}
	})
	// The session's writer took a message from its buffer: there is room.
	m.HandleSentMessage(func(ss *melody.Session, _ []byte) {
		if w := watcherOf(ss); w != nil {
			w.madeRoom()
		}
	})
	return h
}

// madeRoom wakes a replay waiting for room in w's buffer. It never blocks:
// one wake-up pending is enough, the replay tries its write again.
func (w *watcher) madeRoom() {
	select {
	case w.room <- struct{}{}:
	default:
	}
}

func watcherOf(ss *melody.Session) *watcher {
	v, ok := ss.Get("watcher")
	if !ok {
		return nil
	}
	return v.(*watcher)
}

// checkOrigin admits clients that send no Origin (they are not browsers),
// and browsers on the server's own origin or a configured one: scheme,
// host and port compared against the configuration (security.go), never
// against the request's Host header, which the client writes. An opaque
// origin ("null": a sandboxed frame, a file, a privacy redirect) and a
// request with two Origins are nobody's. The HTTP API's requests that
// change something are held to the same rule (guard).
func (s *Server) checkOrigin(r *http.Request) bool {
	vals := r.Header.Values("Origin")
	switch {
	case len(vals) == 0:
		return true
	case len(vals) > 1 || strings.EqualFold(vals[0], "null"):
		return false
	}
	u, err := url.Parse(vals[0])
	if err != nil {
		return false
	}
	return s.originAllowed(r, u)
}

// serve upgrades GET /ws with its filters: store, job, kind (repeatable),
// since=<event id>. A watcher with too many filter values, or whose token
// already holds as many watchers as it may on this process, is refused
// before the upgrade (ws_limits.go). melody serves the session within
// this call: the token's place is given back when it ends.
func (h *hub) serve(c *gin.Context) {
	f, since, err := parseWatch(c.Request.URL.Query(), h.filters)
	if err != nil {
		h.refuse(c, err)
		return
	}
	w := &watcher{f: f, since: since, idx: -1, replaying: since != "", room: make(chan struct{}, 1)}
	if !h.s.checkOrigin(c.Request) {
		h.s.fail(c, newError(http.StatusForbidden, "forbidden", "origin not allowed"))
		return
	}
	token := actor(c)
	if !h.slots.take(token) {
		h.refuse(c, h.slots.refusal(token))
		return
	}
	defer h.slots.give(token)
	h.mu.Lock()
	if h.stopping {
		h.mu.Unlock()
		h.s.fail(c, newError(http.StatusServiceUnavailable, "shutting_down", "server shutting down"))
		return
	}
	h.conns.Add(1) // before Stop waits: stopping is false
	h.mu.Unlock()
	defer h.conns.Done()
	w.conn = &hijackRecorder{ResponseWriter: c.Writer}
	if err := h.m.HandleRequestWithKeys(w.conn, c.Request, map[string]any{"watcher": w}); err != nil {
		h.s.log.Warn("websocket upgrade failed", "request_id", requestID(c), "err", err)
	}
}

// refuse answers err, counting the watcher limits' refusals by code (the
// access log has the request, its actor and its status).
func (h *hub) refuse(c *gin.Context, err error) {
	if ae := classify(err); ae != nil && (ae.code == "too_many_filters" || ae.code == "too_many_watchers") {
		h.s.metrics.wsRefused.WithLabelValues(ae.code).Inc()
	}
	h.s.fail(c, err)
}

// replay sends what the stream still holds after the watcher's since,
// then lets the live events through: live events arriving meanwhile wait
// in pending, and only those after the last replayed id are sent, so there
// is no gap and no duplicate. Then it sends stream.live. Every write waits
// for room (replayWrite): nothing is lost to a watcher slower than the
// replay, except live events beyond pending's bound, which it is told
// about (stream.dropped) in their place. A stream it cannot read is told
// as stream.gap from the position reached. It runs under the hub's
// context and wait group: it ends when the hub stops.
func (h *hub) replay(ctx context.Context, w *watcher) {
	cursor, told := w.since, ""
	gap := func() bool { // events after cursor may be missing: say so, once per position
		if told == cursor {
			return true
		}
		told = cursor
		b, _ := json.Marshal(map[string]string{"type": string(jobs.FrameGap), "since": cursor})
		return h.replayWrite(ctx, w, b)
	}
	trimmed, err := jobsdb.EventsGap(ctx, h.s.rdb, cursor, h.s.cfg.Jobs.EventsMaxLen)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		h.s.log.Warn("websocket replay: cannot tell whether the stream was trimmed", "since", cursor, "err", err)
	}
	if (err != nil || trimmed) && !gap() {
		return
	}
	for {
		evs, err := jobsdb.ReadEvents(ctx, h.s.rdb, cursor, replayPage, 0)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.s.log.Warn("websocket replay failed: the watcher is told events may be missing", "since", cursor, "err", err)
			if !gap() {
				return
			}
			break
		}
		for _, e := range evs {
			cursor = e.ID
			if w.match(e) {
				b, _ := json.Marshal(e)
				if !h.replayWrite(ctx, w, b) {
					return
				}
			}
		}
		if len(evs) < replayPage {
			break
		}
	}
	w.mu.Lock()
	w.last = cursor
	w.mu.Unlock()
	sentLive := false
	for {
		w.mu.Lock()
		pending, ids, dropped, last := w.pending, w.pendIDs, w.dropped, w.last
		w.pending, w.pendIDs, w.dropped, w.dropSince = nil, nil, 0, time.Time{}
		if len(pending) == 0 && dropped == 0 {
			if sentLive {
				w.replaying = false
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			if !h.replayWrite(ctx, w, streamLive) {
				return
			}
			sentLive = true
			continue // what queued during that write goes out before the sender writes
		}
		w.mu.Unlock()
		for i, b := range pending {
			if last == "" || jobs.CompareStreamIDs(ids[i], last) > 0 {
				if !h.replayWrite(ctx, w, b) {
					return
				}
				last = ids[i]
			}
		}
		w.mu.Lock()
		w.last = last
		w.mu.Unlock()
		if dropped > 0 { // they came after pending was full: after these
			notice, _ := json.Marshal(map[string]any{"type": jobs.FrameDropped, "count": dropped})
			if !h.replayWrite(ctx, w, notice) {
				return
			}
		}
	}
}

// replayWrite sends b for the replay, waiting while the watcher's buffer
// is full: until melody's writer sends a message (HandleSentMessage: there
// is room) or the session closes. It returns false when the session is
// closed or the hub stops, or after disconnecting a watcher that made no
// room for StuckWatcher.
func (h *hub) replayWrite(ctx context.Context, w *watcher, b []byte) bool {
	var stuck *time.Timer // runs while the buffer stays full
	defer func() {
		if stuck != nil {
			stuck.Stop()
		}
	}()
	for {
		w.mu.Lock()
		w.full = false
		w.mu.Unlock()
		if w.ss.Write(b) != nil {
			return false // closed
		}
		w.mu.Lock()
		full := w.full
		w.mu.Unlock()
		switch {
		case !full:
			return true
		case w.ss.IsClosed() || ctx.Err() != nil:
			return false
		case stuck == nil:
			stuck = time.NewTimer(h.s.cfg.StuckWatcher)
		}
		select {
		case <-ctx.Done():
			return false
		case <-stuck.C:
			h.disconnect(w)
			return false
		case <-w.room:
		}
	}
}

// writeOutsideLock sends b, first telling the watcher how many events it
// lost if it lost some. The caller holds w.mu; it is released around each
// write (melody's HandleError takes it when the buffer is full) and held
// again on return. melody drops what does not fit in the buffer and
// reports it to HandleError, which counts it.
func (h *hub) writeOutsideLock(w *watcher, b []byte) {
	if n := w.dropped; n > 0 {
		notice, _ := json.Marshal(map[string]any{"type": jobs.FrameDropped, "count": n})
		w.mu.Unlock()
		_ = w.ss.Write(notice)
		w.mu.Lock()
		if w.dropped > n {
			// The notice did not fit either (HandleError counted it): still
			// stuck. That count stands for b, which is not sent either.
			return
		}
		w.dropped -= n
		if w.dropped == 0 {
			w.dropSince = time.Time{}
		}
	}
	w.mu.Unlock()
	_ = w.ss.Write(b)
	w.mu.Lock()
}

// hijackRecorder keeps the connection the WebSocket upgrade takes over,
// so that a stuck watcher can be disconnected: melody only offers a close
// frame, which waits behind the watcher's full buffer.
type hijackRecorder struct {
	http.ResponseWriter
	conn atomic.Pointer[net.Conn]
}

func (r *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("websocket: the response cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err == nil {
		r.conn.Store(&c)
	}
	return c, rw, err
}

func (r *hijackRecorder) close() {
	if c := r.conn.Load(); c != nil {
		_ = (*c).Close()
	}
}

// Start runs the hub's goroutines until ctx ends or Stop: the tailer, the
// sender (which starts each watcher's replay, counted in the same wait
// group and ended by the same context) and the node watcher (nodes.go).
func (h *hub) Start(ctx context.Context) error {
	if h.started.Load() {
		return errors.New("api: events hub already started")
	}
	ctx, h.stop = context.WithCancel(ctx)
	h.wg.Add(3)
	go func() { defer h.wg.Done(); h.tail(ctx) }()
	go func() { defer h.wg.Done(); h.send(ctx) }()
	go func() { defer h.wg.Done(); h.s.watchNodes(ctx) }()
	h.started.Store(true)
	return nil
}

// tail reads the events stream from now on: from the id of its last
// entry when it starts ("0-0": none), then from the last it read, never
// from "$", which Redis takes as "after the last entry when this read
// arrives": what is appended before the first read arrives, or between
// two reads that found nothing, would be skipped. It closes placed once
// it has that first id; the sender admits no watcher before, so a
// watcher's stream.live comes after it, and every event appended after
// that reaches the sender.
func (h *hub) tail(ctx context.Context) {
	var last string
	for last == "" {
		id, err := jobsdb.LastEventID(ctx, h.s.rdb)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			h.s.log.Warn("finding the end of the events stream failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		default:
			last = id
		}
	}
	close(h.placed)
	for ctx.Err() == nil {
		evs, err := jobsdb.ReadEvents(ctx, h.s.rdb, last, 1000, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				h.s.log.Warn("tailing events failed; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		for _, e := range evs {
			last = e.ID
			b, _ := json.Marshal(e)
			select {
			case h.events <- live{ev: e, raw: b}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// send owns the set of watchers: it adds and removes them (ops) and
// delivers each live event to the matching ones. A watcher with nothing to
// replay is live as soon as it is in the set; one with a since= replay
// gets its replay goroutine, and live events wait in its pending until
// that is done. It takes no watcher before the tailer is placed (tail).
func (h *hub) send(ctx context.Context) {
	defer close(h.quit)
	select {
	case <-h.placed:
	case <-ctx.Done():
		return
	}
	var set, stuck []*watcher
	for {
		select {
		case <-ctx.Done():
			return
		case op := <-h.ops:
			w := op.w
			switch {
			case op.size != nil:
				op.size <- len(set)
			case op.remove:
				set = leave(set, w)
			default:
				w.idx = len(set)
				set = append(set, w)
				if w.since == "" {
					// The sender alone writes to it, and this comes first:
					// its buffer is empty, so it fits.
					_ = w.ss.Write(streamLive)
				} else {
					h.wg.Add(1) // the sender is counted: never from zero
					go func() { defer h.wg.Done(); h.replay(ctx, w) }()
				}
			}
		case l := <-h.events:
			for _, w := range set {
				if !w.match(l.ev) {
					continue
				}
				w.mu.Lock()
				switch {
				case w.replaying && len(w.pending) >= 4*sessionBuffer:
					if w.dropSince.IsZero() {
						w.dropSince = time.Now()
					}
					w.dropped++ // told with stream.dropped after the replay
				case w.replaying:
					w.pending = append(w.pending, l.raw)
					w.pendIDs = append(w.pendIDs, l.ev.ID)
				case w.last == "":
					h.writeOutsideLock(w, l.raw)
				case jobs.CompareStreamIDs(l.ev.ID, w.last) > 0:
					// The first event newer than the replay: the rest are too.
					h.writeOutsideLock(w, l.raw)
					w.last = ""
				}
				if w.dropped > 0 && time.Since(w.dropSince) > h.s.cfg.StuckWatcher {
					stuck = append(stuck, w)
				}
				w.mu.Unlock()
			}
			for _, w := range stuck {
				h.disconnect(w)
				set = leave(set, w)
			}
			clear(stuck)
			stuck = stuck[:0]
		}
	}
}

// size is how many watchers the sender holds (-1 once it has stopped).
func (h *hub) size() int {
	if !h.started.Load() {
		return 0
	}
	c := make(chan int, 1)
	select {
	case h.ops <- watcherOp{size: c}:
		return <-c
	case <-h.quit:
		return -1
	}
}

// leave removes w from the sender's set, if it is there.
func leave(set []*watcher, w *watcher) []*watcher {
	i := w.idx
	if i < 0 || i >= len(set) || set[i] != w {
		return set
	}
	n := len(set) - 1
	set[i] = set[n]
	set[i].idx = i
	set[n] = nil
	w.idx = -1
	return set[:n]
}

// disconnect closes a stuck watcher's session.
func (h *hub) disconnect(w *watcher) {
	h.s.log.Warn("disconnecting a stuck watcher", "remote", w.ss.RemoteAddr())
	// A close frame would queue behind the full buffer and be dropped like
	// the rest: close the connection itself.
	_ = w.ss.CloseWithMsg(melody.FormatCloseMessage(4008, "too slow: reconnect with since="))
	w.conn.close()
}

// Stop disconnects the watchers (close frame 1001) and refuses new ones,
// ends the hub's goroutines, replays included, waits for them and for the
// sessions to end, then closes melody. When ctx ends first it closes the
// connections still open and returns ctx's error; what is left ends on
// its own shortly.
func (h *hub) Stop(ctx context.Context) error {
	h.once.Do(func() {
		h.mu.Lock()
		h.stopping = true
		live := maps.Clone(h.live)
		h.mu.Unlock()
		bye := melody.FormatCloseMessage(melody.CloseGoingAway, "server shutting down")
		for ss := range live {
			_ = ss.CloseWithMsg(bye)
		}
		if h.stop != nil {
			h.stop()
		}
		go func() { // the hub's last goroutine: it ends with the sessions
			h.conns.Wait()
			h.wg.Wait()
			_ = h.m.Close()
			close(h.stopped)
		}()
	})
	select {
	case <-h.stopped:
		return nil
	case <-ctx.Done():
		h.mu.Lock()
		for _, w := range h.live {
			w.conn.close() // a watcher too stuck to take its close frame
		}
		h.mu.Unlock()
		return fmt.Errorf("api: events hub: %w", context.Cause(ctx))
	}
}
