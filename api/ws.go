package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/olahol/melody"

	"storekeeper/jobs"
)

// WebSocket watchers (DESIGN.md, "Melody — facts measured"): one tailer
// per process reads the events stream and hands each event to one sender
// goroutine through a buffered channel; the sender writes to each matching
// session's buffer without waiting. A session whose buffer is full loses
// that event only for itself; it is told how many it missed
// (stream.dropped) as soon as it has room, and it is disconnected if it
// stays stuck. A watcher that missed events reconnects with since=.
//
// A since= replay is different: it reads the stream at the watcher's pace,
// so it waits for room in the buffer instead of dropping, however long the
// replay (a watcher too slow for it is disconnected like a stuck one).

const (
	sessionBuffer = 1024             // melody's per-session buffer
	stuckFor      = 10 * time.Second // dropping for this long: disconnected
	replayPage    = 500
)

// watcher is one session's filters and position.
type watcher struct {
	stores, jobIDs []string
	kinds          []jobs.Kind

	mu        sync.Mutex
	last      string   // id of the last event sent ("" before any)
	replaying bool     // live events wait in pending until the replay is done
	full      bool     // while replaying: a write found the buffer full
	pending   [][]byte // live events that arrived during the replay, with ids
	pendIDs   []string
	dropped   int       // events lost since the last stream.dropped
	dropSince time.Time // when the current run of drops began
}

func (w *watcher) match(e jobs.Event) bool {
	return (len(w.stores) == 0 || slices.Contains(w.stores, e.Store)) &&
		(len(w.jobIDs) == 0 || slices.Contains(w.jobIDs, e.JobID)) &&
		(len(w.kinds) == 0 || slices.Contains(w.kinds, e.Kind))
}

type live struct {
	ev  jobs.Event
	raw []byte
}

type hub struct {
	s      *Server
	m      *melody.Melody
	events chan live
	stop   context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func newHub(s *Server) *hub {
	m := melody.New()
	m.Config.MessageBufferSize = sessionBuffer
	m.Config.MaxMessageSize = 4096
	m.Upgrader.CheckOrigin = s.checkOrigin
	h := &hub{s: s, m: m, events: make(chan live, 4096)}
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
	m.HandleConnect(func(ss *melody.Session) {
		s.metrics.wsWatchers.Inc()
		if w := watcherOf(ss); w != nil {
			since, _ := ss.Get("since")
			go h.replay(ss, w, since.(string))
		}
	})
	m.HandleDisconnect(func(*melody.Session) { s.metrics.wsWatchers.Dec() })
	return h
}

func watcherOf(ss *melody.Session) *watcher {
	v, ok := ss.Get("watcher")
	if !ok {
		return nil
	}
	return v.(*watcher)
}

// checkOrigin admits clients that send no Origin (they are not browsers),
// the server's own origin, and the configured ones.
func (s *Server) checkOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// serve upgrades GET /ws with its filters: store, job, kind (repeatable),
// since=<event id>.
func (h *hub) serve(c *gin.Context) {
	q := c.Request.URL.Query()
	w := &watcher{stores: q["store"], jobIDs: q["job"], replaying: true}
	for _, k := range q["kind"] {
		if !jobs.Kind(k).Valid() {
			h.s.fail(c, invalid("unknown kind "+k))
			return
		}
		w.kinds = append(w.kinds, jobs.Kind(k))
	}
	since := q.Get("since")
	if since != "" && !jobs.ValidStreamID(since) {
		h.s.fail(c, invalid("since must be an event id"))
		return
	}
	if !h.s.checkOrigin(c.Request) {
		h.s.fail(c, newError(http.StatusForbidden, "forbidden", "origin not allowed"))
		return
	}
	rec := &hijackRecorder{ResponseWriter: c.Writer}
	if err := h.m.HandleRequestWithKeys(rec, c.Request, map[string]any{"watcher": w, "since": since, "conn": rec}); err != nil {
		h.s.log.Warn("websocket upgrade failed", "request_id", requestID(c), "err", err)
	}
}

// replay sends what the stream still holds after since, then lets the
// live events through: live events arriving meanwhile wait in pending, and
// only those after the last replayed id are sent, so there is no gap and
// no duplicate. Every write waits for room (replayWrite): nothing is lost
// to a watcher slower than the replay, except live events beyond pending's
// bound, which it is told about (stream.dropped) in their place.
func (h *hub) replay(ss *melody.Session, w *watcher, since string) {
	if since != "" {
		ctx := context.Background()
		if gap, err := jobs.EventsGap(ctx, h.s.rdb, since, h.s.cfg.Jobs.EventsMaxLen); err == nil && gap {
			b, _ := json.Marshal(map[string]string{"type": "stream.gap", "since": since})
			if !h.replayWrite(ss, w, b) {
				return
			}
		}
		cursor := since
		for {
			evs, err := jobs.ReadEvents(ctx, h.s.rdb, cursor, replayPage, 0)
			if err != nil {
				h.s.log.Warn("websocket replay failed", "err", err)
				break
			}
			for _, e := range evs {
				cursor = e.ID
				if w.match(e) {
					b, _ := json.Marshal(e)
					if !h.replayWrite(ss, w, b) {
						return
					}
				}
			}
			w.mu.Lock()
			w.last = cursor
			w.mu.Unlock()
			if len(evs) < replayPage {
				break
			}
		}
	}
	for {
		w.mu.Lock()
		pending, ids, dropped, last := w.pending, w.pendIDs, w.dropped, w.last
		w.pending, w.pendIDs, w.dropped, w.dropSince = nil, nil, 0, time.Time{}
		if len(pending) == 0 && dropped == 0 {
			w.replaying = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		for i, b := range pending {
			if last == "" || jobs.CompareStreamIDs(ids[i], last) > 0 {
				if !h.replayWrite(ss, w, b) {
					return
				}
				last = ids[i]
			}
		}
		w.mu.Lock()
		w.last = last
		w.mu.Unlock()
		if dropped > 0 { // they came after pending was full: after these
			notice, _ := json.Marshal(map[string]any{"type": "stream.dropped", "count": dropped})
			if !h.replayWrite(ss, w, notice) {
				return
			}
		}
	}
}

// replayWrite sends b for the replay, waiting while the watcher's buffer
// is full (melody signals no room, so it polls, backing off to 20 ms). It
// returns false when the session is closed, or after disconnecting a
// watcher that made no room for StuckWatcher.
func (h *hub) replayWrite(ss *melody.Session, w *watcher, b []byte) bool {
	var since time.Time
	wait := time.Millisecond
	for {
		w.mu.Lock()
		w.full = false
		w.mu.Unlock()
		if ss.Write(b) != nil {
			return false // closed
		}
		w.mu.Lock()
		full := w.full
		w.mu.Unlock()
		switch {
		case !full:
			return true
		case ss.IsClosed():
			return false
		case since.IsZero():
			since = time.Now()
		case time.Since(since) > h.s.cfg.StuckWatcher:
			h.disconnect(ss)
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// writeLocked sends b, first telling the watcher how many events it lost
// if it lost some. melody drops what does not fit in the buffer and
// reports it to HandleError, which counts it.
func (h *hub) writeLocked(ss *melody.Session, w *watcher, b []byte) {
	if n := w.dropped; n > 0 {
		notice, _ := json.Marshal(map[string]any{"type": "stream.dropped", "count": n})
		w.mu.Unlock()
		_ = ss.Write(notice)
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
	_ = ss.Write(b)
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

func (h *hub) start(ctx context.Context) {
	ctx, h.stop = context.WithCancel(ctx)
	h.wg.Add(3)
	go func() { defer h.wg.Done(); h.tail(ctx) }()
	go func() { defer h.wg.Done(); h.send(ctx) }()
	go func() { defer h.wg.Done(); h.s.watchNodes(ctx) }()
}

// watchNodes emits node.down for nodes whose heartbeat expired: whichever
// API or worker process sees it first does, once.
func (s *Server) watchNodes(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if down, err := jobs.CheckNodes(ctx, s.rdb, s.cfg.Jobs.EventsMaxLen); err == nil && len(down) > 0 {
			s.log.Warn("nodes down: their heartbeats expired", "nodes", down)
		}
	}
}

// tail reads the events stream from now on.
func (h *hub) tail(ctx context.Context) {
	last := "$"
	for ctx.Err() == nil {
		evs, err := jobs.ReadEvents(ctx, h.s.rdb, last, 1000, time.Second)
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

// send delivers each live event to the matching sessions.
func (h *hub) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-h.events:
			sessions, _ := h.m.Sessions()
			for _, ss := range sessions {
				w := watcherOf(ss)
				if w == nil || !w.match(l.ev) {
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
				case w.last == "" || jobs.CompareStreamIDs(l.ev.ID, w.last) > 0:
					h.writeLocked(ss, w, l.raw)
					w.last = l.ev.ID
				}
				stuck := w.dropped > 0 && time.Since(w.dropSince) > h.s.cfg.StuckWatcher
				w.mu.Unlock()
				if stuck {
					h.disconnect(ss)
				}
			}
		}
	}
}

// disconnect closes a stuck watcher's session.
func (h *hub) disconnect(ss *melody.Session) {
	h.s.log.Warn("disconnecting a stuck watcher", "remote", ss.RemoteAddr())
	// A close frame would queue behind the full buffer and be dropped like
	// the rest: close the connection itself.
	_ = ss.CloseWithMsg(melody.FormatCloseMessage(4008, "too slow: reconnect with since="))
	if v, ok := ss.Get("conn"); ok {
		v.(*hijackRecorder).close()
	}
}

func (h *hub) close() {
	h.once.Do(func() {
		_ = h.m.CloseWithMsg(melody.FormatCloseMessage(1001, "server shutting down"))
		if h.stop != nil {
			h.stop()
		}
		h.wg.Wait()
	})
}
