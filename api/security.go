package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// Browser-facing defences. A browser holds credentials the API must not
// act on when another site makes it send them: HTTP Basic is accepted
// under /monitoring only (auth.go), and every request that may change
// something (any method but GET and HEAD) is refused before its route
// looks at its token when it carries an Origin that is neither the
// server's own nor in AllowedOrigins (403 cross_origin), or a
// Content-Type other than JSON (415 unsupported_media_type). A browser
// adds its page's Origin to every such request ("null" for an opaque
// one), and an HTML form can only send form or text Content-Types. A
// request with no Origin is not a browser's (ctl, curl, scripts) and is
// not held to it. A request with no Content-Type has no body ({}) or one
// that must parse as strict JSON: a browser sends such a body only from
// fetch or sendBeacon, always with an Origin. The WebSocket is held to
// the same origin rule (checkOrigin in ws.go calls originAllowed).
//
// The server's own origin is never taken from the request's Host header,
// which the client writes: it is PublicURL's when set; otherwise the
// scheme and host:port of Listen; otherwise, or when Listen is a wildcard
// (":8080", "0.0.0.0:8080"), the address the request's connection
// arrived on. For a loopback address, localhost, 127.0.0.1 and [::1]
// with the same port are the same server.

var (
	errMediaType = newError(http.StatusUnsupportedMediaType, "unsupported_media_type",
		"a request body must be JSON, sent with Content-Type: application/json")
	errUnknownState = func(store string) *apiError {
		return newError(http.StatusConflict, "store_unknown_state",
			fmt.Sprintf("the owner of store %s has not published its state (backups, health) yet; try again in a few seconds", store))
	}
)

func errCrossOrigin(origin string) *apiError {
	if len(origin) > 200 {
		origin = origin[:200] + "…"
	}
	return newError(http.StatusForbidden, "cross_origin",
		fmt.Sprintf("requests from origin %q are refused: only the server's own origin (--public-url, else --listen) and --allowed-origins may send them", origin))
}

// canonicalOrigin is u's origin as scheme://host[:port]: http or https,
// the host lower case (an IP address in its canonical form), the port
// left out when it is the scheme's default. ok is false for anything
// that is not an origin (user info, a query, a fragment, another scheme,
// no host, a bad port); a path is refused unless allowPath.
func canonicalOrigin(u *url.URL, allowPath bool) (string, bool) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery ||
		u.Fragment != "" || u.RawFragment != "" || !allowPath && u.Path != "" && u.Path != "/" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if !validHost(host) {
		return "", false
	}
	if strings.HasSuffix(u.Host, ":") { // "http://h:" has an empty port
		return "", false
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return "", false
		}
		if scheme == "http" && n == 80 || scheme == "https" && n == 443 {
			port = ""
		}
	}
	return joinOrigin(scheme, host, port), true
}

// validHost accepts an IP address or a DNS name (IDNs come as punycode).
func validHost(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, r := range host {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// joinOrigin writes scheme://host[:port], an IP address canonical and
// IPv6 in brackets.
func joinOrigin(scheme, host, port string) string {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		host = a.String()
		if a.Is6() {
			host = "[" + host + "]"
		}
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host
}

// parseOrigin reads a configured origin (--allowed-origins, --public-url).
func parseOrigin(s string, allowPath bool) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	o, ok := canonicalOrigin(u, allowPath)
	if !ok {
		return "", fmt.Errorf("%q is not scheme://host[:port] with scheme http or https", s)
	}
	return o, nil
}

// isLoopback tells localhost and loopback addresses.
func isLoopback(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// hostOrigins are the origins a server at host:port is reached at:
// for a loopback host, localhost, 127.0.0.1 and [::1] alike.
func hostOrigins(scheme, host, port string) []string {
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	out := []string{joinOrigin(scheme, strings.ToLower(host), port)}
	if isLoopback(host) {
		for _, h := range []string{"localhost", "127.0.0.1", "[::1]"} {
			if o := joinOrigin(scheme, h, port); !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	return out
}

// wildcardHost tells a listen host that stands for every address.
func wildcardHost(host string) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsUnspecified()
}

// Validate checks the Config fields that need neither Redis nor a server
// (the origins, the listen address, the trusted proxies, the limits, the
// metrics token), so that a command can refuse them before it touches
// anything; New checks them too. The errors are *ConfigError.
func (cfg Config) Validate() error {
	var s Server
	if err := s.setupOrigins(cfg); err != nil {
		return err
	}
	if err := checkProxies(cfg.TrustedProxies); err != nil {
		return err
	}
	if cfg.PushSubscriptionsPerToken < 0 {
		return &ConfigError{Field: "PushSubscriptionsPerToken", Err: errors.New("push subscriptions per token must be at least 1")}
	}
	return checkMetricsToken(cfg.MetricsToken)
}

// setupOrigins reads PublicURL, Listen and AllowedOrigins.
func (s *Server) setupOrigins(cfg Config) error {
	s.origins = map[string]bool{}
	for _, o := range cfg.AllowedOrigins {
		if strings.TrimSpace(o) == "" {
			continue
		}
		c, err := parseOrigin(o, false)
		if err != nil {
			return &ConfigError{Field: "AllowedOrigins", Err: fmt.Errorf("allowed origin: %w", err)}
		}
		s.origins[c] = true
	}
	s.scheme = "http"
	if cfg.TLS {
		s.scheme = "https"
	}
	switch {
	case cfg.PublicURL != "":
		o, err := parseOrigin(cfg.PublicURL, true)
		if err != nil {
			return &ConfigError{Field: "PublicURL", Err: fmt.Errorf("public URL: %w", err)}
		}
		u, _ := url.Parse(o)
		s.own = hostOrigins(u.Scheme, u.Hostname(), u.Port())
	case cfg.Listen != "":
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return &ConfigError{Field: "Listen", Err: fmt.Errorf("listen address %q: %w", cfg.Listen, err)}
		}
		if !wildcardHost(host) && port != "0" && port != "" {
			s.own = hostOrigins(s.scheme, host, port)
		}
	}
	return nil
}

// ownOrigins are the server's own origins for r: the configured ones,
// else those of the address r's connection arrived on.
func (s *Server) ownOrigins(r *http.Request) []string {
	if s.own != nil {
		return s.own
	}
	addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || addr == nil {
		return nil
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return nil
	}
	scheme := s.scheme
	if r.TLS != nil {
		scheme = "https"
	}
	return hostOrigins(scheme, host, port)
}

// originAllowed tells whether a browser on origin u may act on this
// server: its own origin, or an allowed one, scheme, host and port
// compared. The request's Host header plays no part.
func (s *Server) originAllowed(r *http.Request, u *url.URL) bool {
	o, ok := canonicalOrigin(u, false)
	if !ok {
		return false
	}
	return s.origins[o] || slices.Contains(s.ownOrigins(r), o)
}

// safeMethod tells the methods that change nothing here.
func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// guard refuses, before any route's authentication runs, a request that
// may change something and comes from another site's page: a foreign or
// opaque Origin (403 cross_origin), or a body that is not declared JSON
// (415 unsupported_media_type).
func (s *Server) guard(c *gin.Context) {
	r := c.Request
	if safeMethod(r.Method) {
		c.Next()
		return
	}
	if !s.checkOrigin(r) {
		s.fail(c, errCrossOrigin(r.Header.Get("Origin")))
		return
	}
	if !jsonContentType(r) {
		s.fail(c, errMediaType)
		return
	}
	c.Next()
}

// wsOrigin holds the WebSocket upgrade (a GET) to the same origin rule,
// answered the same way, before the token is looked at.
func (s *Server) wsOrigin(c *gin.Context) {
	if !s.checkOrigin(c.Request) {
		s.fail(c, errCrossOrigin(c.Request.Header.Get("Origin")))
		return
	}
	c.Next()
}

// wsUpgrade answers a GET /ws that is not a WebSocket handshake as the
// API answers any bad request, not with the upgrader's plain text.
func (s *Server) wsUpgrade(c *gin.Context) {
	if !websocket.IsWebSocketUpgrade(c.Request) {
		s.fail(c, invalid("GET /ws is a WebSocket: it needs Connection: Upgrade and Upgrade: websocket"))
		return
	}
	c.Next()
}

// jsonContentType accepts application/json, with parameters (a charset
// only if UTF-8), and no Content-Type for a request without a body (ctl,
// curl -X POST, DELETE), which counts as {}. A body of any other type is
// refused whatever it holds: a form or a text/plain body is what a page on
// another site can make a browser send.
func jsonContentType(r *http.Request) bool {
	vals := r.Header.Values("Content-Type")
	switch len(vals) {
	case 0:
		return r.ContentLength == 0
	case 1:
	default:
		return false
	}
	mt, params, err := mime.ParseMediaType(vals[0])
	if err != nil || mt != "application/json" {
		return false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return false
	}
	return true
}

// Content security policies. The dashboard (/ and /ui/) uses only its own
// files; asynqmon's page has two inline scripts (its settings and
// webpack's loader), allowed by their hashes, computed from the page it
// serves, and uses inline styles and Google's web fonts. Neither may be
// framed.
const (
	dashboardCSP  = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	monitoringCSP = "default-src 'self'; script-src 'self'%s; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; " +
		"font-src 'self' data: https://fonts.gstatic.com; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; " +
		"form-action 'self'; frame-ancestors 'none'"
)

var inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

// monitoringPolicy renders asynqmon's page once and allows its inline
// scripts by hash.
func monitoringPolicy(mon http.Handler) string {
	page := &pageRecorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, "/monitoring/", nil)
	mon.ServeHTTP(page, req)
	var hashes strings.Builder
	for _, m := range inlineScript.FindAllSubmatch(page.body.Bytes(), -1) {
		sum := sha256.Sum256(m[1])
		hashes.WriteString(" 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'")
	}
	return fmt.Sprintf(monitoringCSP, hashes.String())
}

// pageRecorder keeps what a handler writes.
type pageRecorder struct {
	header http.Header
	body   bytes.Buffer
}

func (p *pageRecorder) Header() http.Header         { return p.header }
func (p *pageRecorder) Write(b []byte) (int, error) { return p.body.Write(b) }
func (p *pageRecorder) WriteHeader(int)             {}

// pageHeaders are the headers of every page and file a browser may show.
func pageHeaders(c *gin.Context, csp string) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
}

// clientRequestID is the pattern of a request id a client may give.
var clientRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// checkProxies checks TrustedProxies: IP addresses or CIDRs.
func checkProxies(list []string) error {
	for _, p := range list {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				return &ConfigError{Field: "TrustedProxies", Err: fmt.Errorf("trusted proxy %q is not an IP address or a CIDR", p)}
			}
		}
	}
	if err := (&gin.Engine{}).SetTrustedProxies(list); err != nil {
		return &ConfigError{Field: "TrustedProxies", Err: fmt.Errorf("trusted proxies: %w", err)}
	}
	return nil
}
