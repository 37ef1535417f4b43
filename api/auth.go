package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"regexp"
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
	for i, e := range entries {
		name, rest, ok1 := strings.Cut(strings.TrimSpace(e), ":")
		role, secret, ok2 := strings.Cut(rest, ":")
		// An error names the entry by its place and, when it looks like
		// one, its name: never by anything after the first colon, where a
		// secret may be (a missing role makes part of the secret "role").
		which := fmt.Sprintf("token %d", i+1)
		if ok1 && tokenNameRE.MatchString(name) { // an entry without a colon may be a bare secret
			which += " (" + name + ")"
		}
		switch {
		case !ok1 || !ok2 || name == "" || secret == "":
			return nil, fmt.Errorf("%s: want name:role:token", which)
		case Role(role) != RoleViewer && Role(role) != RoleOperator:
			return nil, fmt.Errorf("%s: the role (after the first colon) must be viewer or operator", which)
		case !tokenNameRE.MatchString(name):
			return nil, fmt.Errorf("%s: the name must match %s", which, tokenNameRE)
		case len(secret) < 16:
			return nil, fmt.Errorf("%s: the secret needs at least 16 characters", which)
		case seen[name]:
			return nil, fmt.Errorf("%s: named twice", which)
		}
		seen[name] = true
		out = append(out, Token{Name: name, Role: Role(role), Secret: secret})
	}
	return out, nil
}

// tokenNameRE is what a token's name (the actor on its jobs) may be.
var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// credential finds the token a request carries: Authorization Bearer; then,
// where allowed, Basic (the token as password: asynqmon in a browser,
// under /monitoring only) and the token query parameter (WebSocket clients
// in browsers). A browser sends Basic credentials it holds with every
// request to the server, whichever site's page makes it: accepted on the
// API, they would let any page act with them.
func credential(r *http.Request, query, basic bool) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if basic {
		if _, pass, ok := r.BasicAuth(); ok {
			return pass
		}
	}
	if query {
		return r.URL.Query().Get("token")
	}
	return ""
}

// tokenFrom finds a token given as Bearer or as a Basic password (and,
// with query, ?token=): for handlers that act on nothing, such as
// /metrics, whose scrapers often send Basic.
func tokenFrom(r *http.Request, query bool) string { return credential(r, query, true) }

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

// require admits requests whose bearer token (or, with query, ?token=)
// has role need.
func (s *Server) require(need Role, query bool) gin.HandlerFunc {
	return s.authorize(need, query, false)
}

// requireBasic admits requests to /monitoring whose bearer token or Basic
// password has role need, and asks browsers for Basic credentials.
func (s *Server) requireBasic(need Role) gin.HandlerFunc {
	return s.authorize(need, false, true)
}

func (s *Server) authorize(need Role, query, basic bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		t, ok := s.authenticate(credential(c.Request, query, basic))
		if !ok {
			if basic {
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
