// Package netguard keeps requests made for API callers away from the
// deployment's own network: Web Push endpoints are URLs a viewer gives,
// and without a guard the worker would POST to 127.0.0.1:6379, to a cloud
// metadata address or to any host inside the network (server-side request
// forgery).
//
// A Policy is checked twice: when a URL is accepted (CheckURL: https, and
// a host that resolves to public addresses only) and when a connection is
// made (Client's dialer, whose Control hook sees the very address each
// connection attempt goes to and refuses any that is not public), so a
// host whose DNS answer changes after it was checked (DNS rebinding)
// still reaches nothing private. Public is the one definition of "public"
// both use.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal: a URL or an address the policy
// does not allow.
var ErrRefused = errors.New("refused by the outgoing address policy")

// ErrNotPublic is wrapped by a connection refused at dial time: the
// address is private, loopback, link-local, multicast, unspecified or
// otherwise not a public unicast address.
var ErrNotPublic = fmt.Errorf("%w: not a public address", ErrRefused)

// Resolver looks up a host's addresses; *net.Resolver is one, tests stub
// it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// LookupTimeout bounds CheckURL's lookup of a host.
const LookupTimeout = 5 * time.Second

// Policy says where requests may go. The zero Policy allows https to
// hosts with public addresses only, resolved by net.DefaultResolver.
type Policy struct {
	// AllowPrivate allows any address and http as well as https: for
	// tests and push services inside the network.
	AllowPrivate bool
	// Resolver resolves hosts (default net.DefaultResolver).
	Resolver Resolver
}

func (p Policy) resolver() Resolver {
	if p.Resolver != nil {
		return p.Resolver
	}
	return net.DefaultResolver
}

// refused is a refusal: what was refused, for the operator's log, and a
// message that names nothing the caller did not give (no resolved
// address: that would tell a caller what internal names resolve to).
type refused struct {
	public string // safe to show the caller
	detail string // for logs
	err    error  // ErrRefused or ErrNotPublic
}

func (e *refused) Error() string {
	if e.detail != "" {
		return e.public + " (" + e.detail + ")"
	}
	return e.public
}
func (e *refused) Unwrap() error { return e.err }

// Reason is what may be shown to whoever gave the URL about err, a
// refusal: the refusal without any address the policy resolved. ok is
// false when err is not a refusal.
func Reason(err error) (reason string, ok bool) {
	var r *refused
	if errors.As(err, &r) {
		return r.public, true
	}
	return "", false
}

func refuse(public string) error { return &refused{public: public, err: ErrRefused} }

// CheckSyntax checks what can be checked of raw without a lookup: an
// absolute https URL (http too when AllowPrivate) whose host is a DNS name
// (ASCII letters, digits, hyphens and dots) or an IP address, and, unless
// AllowPrivate, not localhost nor a non-public IP address.
func (p Policy) CheckSyntax(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" || u.Host == "" {
		return nil, refuse("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !p.AllowPrivate {
			return nil, refuse("the URL must be https")
		}
	default:
		return nil, refuse("the URL must be https")
	}
	host := u.Hostname()
	if port := u.Port(); port != "" && !validPort(port) {
		return nil, refuse("the port is not a number from 1 to 65535")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !p.AllowPrivate && !Public(ip) {
			return nil, refuse(fmt.Sprintf("address %s is not public", host))
		}
		return u, nil
	}
	if !dnsName(host) {
		return nil, refuse(fmt.Sprintf("host %q is neither a DNS name nor an IP address", host))
	}
	if name := strings.ToLower(strings.TrimSuffix(host, ".")); !p.AllowPrivate && (name == "localhost" || strings.HasSuffix(name, ".localhost")) {
		return nil, refuse(fmt.Sprintf("host %q is loopback", host))
	}
	return u, nil
}

// CheckURL checks raw: CheckSyntax, then, unless AllowPrivate, that its
// host resolves, and only to public addresses.
func (p Policy) CheckURL(ctx context.Context, raw string) error {
	u, err := p.CheckSyntax(raw)
	if err != nil || p.AllowPrivate {
		return err
	}
	host := u.Hostname()
	if _, err := netip.ParseAddr(host); err == nil {
		return nil // a public IP address: checked
	}
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	addrs, err := p.resolver().LookupNetIP(ctx, "ip", host)
	// One answer for "does not resolve" and "resolves to a private
	// address": a caller learns nothing about internal names.
	public := fmt.Sprintf("host %q does not resolve to public addresses only", host)
	if err != nil {
		return &refused{public: public, detail: err.Error(), err: ErrRefused}
	}
	if len(addrs) == 0 {
		return &refused{public: public, detail: "no addresses", err: ErrRefused}
	}
	for _, a := range addrs {
		if !Public(a) {
			return &refused{public: public, detail: a.String() + " is not public", err: ErrNotPublic}
		}
	}
	return nil
}

// Control is a net.Dialer Control hook: it refuses a connection to an
// address that is not public (unless AllowPrivate). It runs after the
// address is resolved and before connect, so a refused connection sends
// nothing.
func (p Policy) Control(network, address string, _ syscall.RawConn) error {
	if p.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &refused{public: "not a public address", detail: fmt.Sprintf("dialing %s %q", network, address), err: ErrNotPublic}
	}
	if !Public(ap.Addr()) {
		return &refused{public: "not a public address", detail: ap.Addr().String() + " is not public", err: ErrNotPublic}
	}
	return nil
}

// DialTimeout bounds one connection attempt of Client's dialer.
const DialTimeout = 10 * time.Second

// DialContext resolves address's host with the policy's resolver and
// connects to its addresses in turn, each through Control: an address
// that is not public is refused before anything is sent, and the next is
// tried. When every address is refused the error wraps ErrNotPublic.
func (p Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second, Control: p.Control}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		lookup := "ip"
		switch network {
		case "tcp4":
			lookup = "ip4"
		case "tcp6":
			lookup = "ip6"
		}
		addrs, err = p.resolver().LookupNetIP(ctx, lookup, host)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		if len(addrs) == 0 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}}
		}
	}
	var first error
	for i, a := range addrs {
		c, err := dialShare(ctx, d, network, net.JoinHostPort(a.String(), port), len(addrs)-i)
		if err == nil {
			return c, nil
		}
		if first == nil || errors.Is(first, ErrNotPublic) && !errors.Is(err, ErrNotPublic) {
			first = err // an address that was tried says more than a refused one
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// dialShare dials address with its share of ctx's time when left more
// addresses remain to try (at least 2 s), as net.Dialer does, so one
// address that does not answer leaves time for the next.
func dialShare(ctx context.Context, d *net.Dialer, network, address string, left int) (net.Conn, error) {
	if deadline, ok := ctx.Deadline(); ok && left > 1 {
		share := max(time.Until(deadline)/time.Duration(left), 2*time.Second)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, share)
		defer cancel() // a connection made outlives its dial's context
	}
	return d.DialContext(ctx, network, address)
}

// Client is an HTTP client whose every connection goes through
// DialContext. It uses no proxy (a proxy would make the dial go to the
// proxy, not to the URL's host) and follows no redirect: a 3xx is
// returned as the answer (a push service answers 201, never a redirect),
// so a redirect cannot lead anywhere, private or not.
func (p Policy) Client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           p.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Special-purpose ranges (IANA's registries) that are not globally
// reachable, beyond what netip's predicates cover.
var notPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (carrier NAT; some clouds' metadata)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast (deprecated)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo, benchmarking, ORCHID)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: an IPv4 address inside
	netip.MustParsePrefix("3fff::/20"),       // documentation
}

var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64          = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64 prefix: an IPv4 address in the last 32 bits
)

// Public reports whether a is a public unicast address: not private,
// loopback, link-local, multicast, unspecified, reserved or documentation,
// whether written as IPv4, as IPv4-mapped IPv6 or as IPv6. An IPv6
// address must be in 2000::/3 (global unicast), or be the well-known
// NAT64 form of a public IPv4 address (IPv6-only hosts with DNS64 reach
// push services so). An address with a zone is not public.
func Public(a netip.Addr) bool {
	if !a.IsValid() || a.Zone() != "" {
		return false
	}
	a = a.Unmap()
	if a.Is6() {
		if nat64.Contains(a) {
			b := a.As16()
			return Public(netip.AddrFrom4([4]byte(b[12:])))
		}
		if !globalUnicast6.Contains(a) {
			return false
		}
	}
	if !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range notPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// dnsName reports whether host is a DNS host name: ASCII letters, digits
// and hyphens in dot-separated labels of 1 to 63 bytes, at most 253 bytes
// (one trailing dot allowed). Anything else (IDNA, percent-escapes,
// underscores) is refused rather than left to whatever a resolver or
// the HTTP client's IDNA mapping would make of it.
func dnsName(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func validPort(s string) bool {
	if len(s) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n >= 1 && n <= 65535
}
