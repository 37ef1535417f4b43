package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls a storekeeper server's HTTP API and WebSocket. It is safe
// for concurrent use.
type Client struct {
	base     *url.URL
	token    string
	http     *http.Client
	liveWait time.Duration
}

// Option sets up a Client.
type Option func(*Client)

// WithToken authenticates every request with an API token (Authorization:
// Bearer).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient makes the requests with hc instead of a client with a
// one-minute timeout. The WebSocket is dialled apart, through the
// environment's proxy.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// ServerURLError is a server address New cannot use.
type ServerURLError struct{ Server string }

func (e *ServerURLError) Error() string {
	return fmt.Sprintf("server %q: want http[s]://host:port[/prefix]", e.Server)
}

// New returns a client of the server at base URL server
// (http[s]://host:port, with a path prefix when the server is behind one;
// "host:port" means http). A server it cannot use is a *ServerURLError.
func New(server string, opts ...Option) (*Client, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, &ServerURLError{Server: server}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u, http: &http.Client{Timeout: time.Minute}, liveWait: DefaultLiveWait}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error answer of the API: {"error": code, "message": …}.
type Error struct {
	Status  int    `json:"-"`       // the HTTP status
	Code    string `json:"error"`   // unknown_store, unauthorized, job_finished, …
	Message string `json:"message"` // for a person
}

func (e *Error) Error() string { return e.Message + " (" + e.Code + ")" }

// answerError turns a non-2xx answer into an *Error, or into a plain
// error when the body is not the API's (a proxy's page, say).
func answerError(method, target string, status int, body []byte) error {
	ae := &Error{Status: status}
	if json.Unmarshal(body, ae) == nil && ae.Code != "" {
		return ae
	}
	return fmt.Errorf("%s %s: %d %s", method, target, status, http.StatusText(status))
}

type answerKey struct{}

// WithAnswer returns a context under which each answer of the API to a
// call made with it is handed to fn as it came (one JSON document),
// before it is decoded: for a caller that shows or keeps the server's
// JSON as it is. Error answers are not handed on (they are an *Error).
func WithAnswer(ctx context.Context, fn func(raw json.RawMessage)) context.Context {
	return context.WithValue(ctx, answerKey{}, fn)
}

func (c *Client) url(path string, q url.Values) *url.URL {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	return &u
}

// call sends one request, with body as JSON when it is not nil, and
// decodes the answer into out.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	raw, err := c.do(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	if fn, ok := ctx.Value(answerKey{}).(func(json.RawMessage)); ok {
		fn(raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// do sends one request and returns the answer's body; an error answer is
// an *Error.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body any) ([]byte, error) {
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

// apiPath appends one escaped path segment (a store name, a job id).
func apiPath(prefix, segment string) string { return prefix + "/" + url.PathEscape(segment) }
