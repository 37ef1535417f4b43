package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"storekeeper/jobs"
)

// apiClient calls a storekeeper server's HTTP API and WebSocket.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newAPIClient(server, token string) (*apiClient, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("--server %q: want http[s]://host:port[/prefix]", server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &apiClient{base: u, token: token, http: &http.Client{Timeout: time.Minute}}, nil
}

// apiError is an error answer of the API: {"error": code, "message": …}.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Message + " (" + e.Code + ")" }

// answerError turns a non-2xx answer into an *apiError, or into a plain
// error when the body is not the API's (a proxy's page, say).
func answerError(method, target string, status int, body []byte) error {
	ae := &apiError{Status: status}
	if json.Unmarshal(body, ae) == nil && ae.Code != "" {
		return ae
	}
	return fmt.Errorf("%s %s: %d %s", method, target, status, http.StatusText(status))
}

func (c *apiClient) url(path string, q url.Values) *url.URL {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	return &u
}

// do sends one request, with body as JSON when it is not nil, and returns
// the answer's body; an error answer is an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, q url.Values, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.url(path, q)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err // a *url.Error names the method and the URL
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, answerError(method, u.String(), resp.StatusCode, b)
	}
	return b, nil
}

// dialWS opens /ws with the filters in q. A refused upgrade is an
// *apiError when the server said why.
func (c *apiClient) dialWS(ctx context.Context, q url.Values) (*websocket.Conn, error) {
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

// wsFrame is what a feed passes on: an event or control frame as it came,
// a note that the feed reconnected, or the error that stopped it.
type wsFrame struct {
	raw  []byte
	ev   jobs.Event // decoded raw; control frames decode their type only
	live bool       // stream.live: from here on every event reaches this connection

	resumed bool   // reconnected after cause
	since   string // replaying from this event id; "" when unknown: events meanwhile may be missing
	cause   error

	err error // the feed stopped for good
}

// Control frames of /ws (docs/design.md, "HTTP API").
const (
	frameDropped = "stream.dropped"
	frameGap     = "stream.gap"
	frameLive    = "stream.live"
)

// feed watches /ws and survives drops: after a broken connection or a
// stream.dropped notice it reconnects with since= the last event it passed
// on, so the server replays what was missed. Each connection is subscribed
// once the server says stream.live (after its replay), which the feed
// passes on. Its goroutine ends when ctx ends or the feed gives up; frames
// is closed then.
type feed struct {
	frames chan wsFrame
	cancel context.CancelFunc
	done   chan struct{}
	// noLive: the server did not say stream.live in time (one older than
	// this ctl): reconnections are taken as live when they are made.
	noLive bool
}

// Reconnecting after a drop: delays double from reconnectFirst, and the
// feed gives up after reconnectFor.
const (
	reconnectFirst = 250 * time.Millisecond
	reconnectMax   = 5 * time.Second
	reconnectFor   = 30 * time.Second
)

var errDropped = errors.New("the server dropped events for this watcher")

// liveWait bounds waitLive: a server that does not say stream.live by
// then is taken for one older than this ctl.
var liveWait = 10 * time.Second

// watch connects to /ws with the filters in q. The subscription is in
// place once the feed passes on a live frame (waitLive).
func (c *apiClient) watch(ctx context.Context, q url.Values) (*feed, error) {
	conn, err := c.dialWS(ctx, q)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &feed{frames: make(chan wsFrame, 256), cancel: cancel, done: make(chan struct{})}
	go f.run(ctx, c, q, conn)
	return f, nil
}

// waitLive waits for the feed's first connection to be subscribed: for
// the server's stream.live, which it takes. What comes before it is let
// go: without since= there is nothing (no replay, and nothing was asked
// yet). After liveWait without it, it gives up waiting, sets noLive and
// says so on warn.
func (f *feed) waitLive(ctx context.Context, warn io.Writer) error {
	t := time.NewTimer(liveWait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			f.noLive = true
			fmt.Fprintf(warn, "storekeeper: the server did not confirm the subscription (stream.live) within %v; going on without\n", liveWait)
			return nil
		case fr, ok := <-f.frames:
			switch {
			case !ok:
				return errors.New("watching events: the feed ended before it was subscribed")
			case fr.err != nil:
				return fr.err
			case fr.live:
				return nil
			}
		}
	}
}

// close stops the feed and waits for its goroutine.
func (f *feed) close() {
	f.cancel()
	<-f.done
}

func (f *feed) send(ctx context.Context, fr wsFrame) bool {
	select {
	case f.frames <- fr:
		return true
	case <-ctx.Done():
		return false
	}
}

func (f *feed) run(ctx context.Context, c *apiClient, q url.Values, conn *websocket.Conn) {
	defer close(f.done)
	defer close(f.frames)
	last := q.Get("since")
	for {
		cause := f.read(ctx, conn, &last)
		if ctx.Err() != nil {
			return
		}
		var err error
		if conn, err = reconnect(ctx, c, q, last); err != nil {
			if ctx.Err() == nil {
				f.send(ctx, wsFrame{err: fmt.Errorf("watching events: %w (after: %v)", err, cause)})
			}
			return
		}
		if !f.send(ctx, wsFrame{resumed: true, since: last, cause: cause}) {
			conn.Close()
			return
		}
	}
}

// read passes conn's frames on until the connection breaks, the server
// says it dropped events, or ctx ends; last follows the events passed on.
func (f *feed) read(ctx context.Context, conn *websocket.Conn, last *string) error {
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
		if !f.send(ctx, wsFrame{raw: raw, ev: ev, live: ev.Type == frameLive}) {
			return ctx.Err()
		}
	}
}

// reconnect dials /ws again, from since when it is known, until it
// succeeds, the server refuses, or reconnectFor has passed.
func reconnect(ctx context.Context, c *apiClient, q url.Values, since string) (*websocket.Conn, error) {
	if since != "" {
		q = maps.Clone(q)
		q.Set("since", since)
	}
	deadline := time.Now().Add(reconnectFor)
	delay := reconnectFirst
	for {
		conn, err := c.dialWS(ctx, q)
		var ae *apiError
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
