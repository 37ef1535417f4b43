package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/gin-gonic/gin"
)

// Role is what a token may do: a viewer reads, an operator also acts.
type Role string

const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
)

func (r Role) allows(need Role) bool { return r == RoleOperator || r == need }

// Token is a named bearer token; the name is the actor on every job it
// creates.
type Token struct {
	Name   string
	Role   Role
	Secret string
}

// ParseTokens reads "name:role:token,…", or "@file" with one such entry
// per line (blank lines and # comments ignored).
func ParseTokens(spec string) ([]Token, error) {
	var entries []string
	if path, ok := strings.CutPrefix(spec, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("tokens file: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				entries = append(entries, l)
			}
		}
	} else if spec != "" {
		entries = strings.Split(spec, ",")
	}
	var out []Token
	seen := map[string]bool{}
	for _, e := range entries {
		name, rest, ok1 := strings.Cut(strings.TrimSpace(e), ":")
		role, secret, ok2 := strings.Cut(rest, ":")
		switch {
		case !ok1 || !ok2 || name == "" || secret == "":
			return nil, fmt.Errorf("token %q: want name:role:token", redact(e))
		case Role(role) != RoleViewer && Role(role) != RoleOperator:
			return nil, fmt.Errorf("token %s: role must be viewer or operator, not %q", name, role)
		case len(secret) < 16:
			return nil, fmt.Errorf("token %s: at least 16 characters", name)
		case seen[name]:
			return nil, fmt.Errorf("token %s: named twice", name)
		}
		seen[name] = true
		out = append(out, Token{Name: name, Role: Role(role), Secret: secret})
	}
	return out, nil
}

func redact(entry string) string {
	if i := strings.LastIndex(entry, ":"); i >= 0 {
		return entry[:i+1] + "…"
	}
	return "…"
}

// tokenFrom finds the token a request carries: Authorization Bearer, then
// Basic (the token as password, for asynqmon in a browser), then, where
// allowed, the token query parameter (WebSocket clients in browsers).
func tokenFrom(r *http.Request, query bool) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, pass, ok := r.BasicAuth(); ok {
		return pass
	}
	if query {
		return r.URL.Query().Get("token")
	}
	return ""
}

// authenticate compares in constant time against every token (hashes of
// equal length, so the comparison does not leak the length either).
func (s *Server) authenticate(secret string) (Token, bool) {
	if secret == "" {
		return Token{}, false
	}
	got := sha256.Sum256([]byte(secret))
	var found Token
	ok := 0
	for i, t := range s.tokens {
		if subtle.ConstantTimeCompare(got[:], s.sums[i][:]) == 1 {
			found, ok = t, 1
		}
	}
	return found, ok == 1
}

// require admits requests whose token has role need.
func (s *Server) require(need Role, query bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		t, ok := s.authenticate(tokenFrom(c.Request, query))
		if !ok {
			if c.Request.URL.Path == "/monitoring" || strings.HasPrefix(c.Request.URL.Path, "/monitoring/") {
				c.Header("WWW-Authenticate", `Basic realm="storekeeper (any user, the token as password)"`)
			}
			s.fail(c, errUnauthorized)
			return
		}
		if !t.Role.allows(need) {
			s.fail(c, errForbidden)
			return
		}
		c.Set("actor", t.Name)
		c.Next()
	}
}

func actor(c *gin.Context) string { return c.GetString("actor") }
