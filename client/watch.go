package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/jobs"
)

// Control frames of /ws (jobs.FrameLive, FrameGap, FrameDropped).
const (
	FrameLive    = jobs.FrameLive
	FrameGap     = jobs.FrameGap
	frameDropped = jobs.FrameDropped
)

// Filter chooses the events a Feed gets: those of any of the stores, any
// of the kinds and any of the jobs listed (nothing listed: every event),
// after the events with ids up to Since are replayed.
type Filter struct {
	Stores []string
	Kinds  []jobs.Kind
	Jobs   []string
	Since  string // an event id: first replay the events after it
}

func (f Filter) values() url.Values {
	q := url.Values{}
	for _, s := range f.Stores {
		q.Add("store", s)
	}
	for _, k := range f.Kinds {
		q.Add("kind", string(k))
	}
	for _, j := range f.Jobs {
		q.Add("job", j)
	}
	if f.Since != "" {
		q.Set("since", f.Since)
	}
	return q
}

// Frame is what a Feed passes on: an event or a control frame as it
// came, or a note that the feed reconnected.
type Frame struct {
	Raw   json.RawMessage // as the server sent it; nil when Resumed
	Event jobs.Event      // Raw decoded; a control frame decodes its type only

	// Resumed: the feed reconnected after Cause. Since is the event id it
	// replays from; "" when none was known: events meanwhile may be
	// missing. The new connection is subscribed once a Live frame
	// follows.
	Resumed bool
	Since   string
	Cause   error
}

// Live reports whether the frame is stream.live: the connection it came
// on is subscribed.
func (f Frame) Live() bool { return f.Event.Type == FrameLive }

// Gap reports whether the frame is stream.gap: events may be missing.
func (f Frame) Gap() bool { return f.Event.Type == FrameGap }

// feedFrame is a frame, or the error that stopped the feed.
type feedFrame struct {
	Frame
	err error
}

// Feed watches /ws and survives drops: after a broken connection or a
// stream.dropped notice it reconnects with since= the last event it passed
// on, so the server replays what was missed. Each connection is subscribed
// once the server says stream.live (after its replay), which the feed
// passes on. Its goroutine ends when Close is called, when the context
// Watch was given ends, or when it gives up reconnecting.
type Feed struct {
	frames chan feedFrame
	cancel context.CancelFunc
	done   chan struct{}
	live   time.Duration
	// noLive: the server did not say stream.live in time (one older than
	// this client): reconnections are taken as live when they are made.
	noLive bool
}

// Reconnecting after a drop: delays double from reconnectFirst, and the
// feed gives up after reconnectFor.
const (
	reconnectFirst = 250 * time.Millisecond
	reconnectMax   = 5 * time.Second
	reconnectFor   = 30 * time.Second
)

// DefaultLiveWait is how long WaitLive waits for stream.live unless
// WithLiveWait says otherwise.
const DefaultLiveWait = 10 * time.Second

// WithLiveWait bounds WaitLive: a server that does not say stream.live
// within d is taken for one older than this client.
func WithLiveWait(d time.Duration) Option { return func(c *Client) { c.liveWait = d } }

var (
	// ErrClosed: the feed was closed, or gave up and said why before.
	ErrClosed = errors.New("the feed is closed")
	// ErrNotLive: the server did not confirm a subscription in time.
	ErrNotLive = errors.New("the server did not confirm the subscription (stream.live)")

	errDropped = errors.New("the server dropped events for this watcher")
)

// Watch connects to /ws with filter f and starts a Feed. The
// subscription is in place once the feed passes on a Live frame: wait
// for it with WaitLive before asking for what the feed should see.
func (c *Client) Watch(ctx context.Context, f Filter) (*Feed, error) {
	q := f.values()
	conn, err := c.dialWS(ctx, q)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	fd := &Feed{frames: make(chan feedFrame, 256), cancel: cancel, done: make(chan struct{}), live: c.liveWait}
	go fd.run(ctx, c, q, conn)
	return fd, nil
}

// Next returns the next frame. It returns ctx's error when ctx ends
// first, ErrClosed after the feed was closed, and the error that stopped
// the feed when it gave up reconnecting.
func (f *Feed) Next(ctx context.Context) (Frame, error) {
	select {
	case <-ctx.Done():
		return Frame{}, ctx.Err()
	case fr, ok := <-f.frames:
		switch {
		case !ok:
			return Frame{}, ErrClosed
		case fr.err != nil:
			return Frame{}, fr.err
		}
		return fr.Frame, nil
	}
}

// WaitLive waits for the feed's first connection to be subscribed: for
// the server's stream.live, which it takes. What comes before it is let
// go: without Since there is nothing (no replay, and nothing was asked
// for yet). When the server does not say stream.live in time (see
// WithLiveWait) it returns an error wrapping ErrNotLive; the feed goes on,
// and takes its reconnections as subscribed when they are made.
func (f *Feed) WaitLive(ctx context.Context) error {
	t := time.NewTimer(f.live)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			f.noLive = true
			return fmt.Errorf("%w within %v", ErrNotLive, f.live)
		case fr, ok := <-f.frames:
			switch {
			case !ok:
				return errors.New("watching events: the feed ended before it was subscribed")
			case fr.err != nil:
				return fr.err
			case fr.Live():
				return nil
			}
		}
	}
}

// Close stops the feed and waits for its goroutine.
func (f *Feed) Close() {
	f.cancel()
	<-f.done
}

func (f *Feed) send(ctx context.Context, fr feedFrame) bool {
	select {
	case f.frames <- fr:
		return true
	case <-ctx.Done():
		return false
	}
}

func (f *Feed) run(ctx context.Context, c *Client, q url.Values, conn *websocket.Conn) {
	defer close(f.done)
	defer close(f.frames)
	last := q.Get("since")
	for {
		cause := f.read(ctx, conn, &last)
		if ctx.Err() != nil {
			return
		}
		var err error
		if conn, err = c.reconnect(ctx, q, last); err != nil {
			if ctx.Err() == nil {
				f.send(ctx, feedFrame{err: fmt.Errorf("watching events: %w (after: %v)", err, cause)})
			}
			return
		}
		if !f.send(ctx, feedFrame{Frame: Frame{Resumed: true, Since: last, Cause: cause}}) {
			conn.Close()
			return
		}
	}
}

// read passes conn's frames on until the connection breaks, the server
// says it dropped events, or ctx ends; last follows the events passed on.
func (f *Feed) read(ctx context.Context, conn *websocket.Conn, last *string) error {
	stop := context.AfterFunc(ctx, func() {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		conn.Close()
	})
	defer stop()
	defer conn.Close()
	for {
		_, raw, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		var ev jobs.Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			continue // not an event: nothing to do with it
		}
		if ev.Type == frameDropped {
			return errDropped
		}
		if ev.ID != "" {
			*last = ev.ID
		}
		if !f.send(ctx, feedFrame{Frame: Frame{Raw: raw, Event: ev}}) {
			return ctx.Err()
		}
	}
}

// reconnect dials /ws again, from since when it is known, until it
// succeeds, the server refuses, or reconnectFor has passed.
func (c *Client) reconnect(ctx context.Context, q url.Values, since string) (*websocket.Conn, error) {
	if since != "" {
		q = maps.Clone(q)
		q.Set("since", since)
	}
	deadline := time.Now().Add(reconnectFor)
	delay := reconnectFirst
	for {
		conn, err := c.dialWS(ctx, q)
		var ae *Error
		if err == nil || errors.As(err, &ae) || time.Now().After(deadline) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, reconnectMax)
	}
}

// dialWS opens /ws with the filters in q. A refused upgrade is an *Error
// when the server said why.
func (c *Client) dialWS(ctx context.Context, q url.Values) (*websocket.Conn, error) {
	u := c.url("/ws", q)
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	d := websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: 15 * time.Second}
	conn, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(resp.Body)
			return nil, answerError("GET", u.String(), resp.StatusCode, b)
		}
		return nil, fmt.Errorf("websocket %s: %w", u, err)
	}
	return conn, nil
}
