package netguard

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"storekeeper/internal/testsignal"
)

// stub resolves from a table, or with next (which sees how many lookups
// came before), and counts lookups. Nothing in these tests asks a real
// resolver, and nothing connects anywhere but loopback.
type stub struct {
	table map[string][]string
	next  func(host string, n int) []string
	n     atomic.Int32
}

func (s *stub) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	n := int(s.n.Add(1)) - 1
	var addrs []string
	if s.next != nil {
		addrs = s.next(host, n)
	} else {
		addrs = s.table[host]
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip := netip.MustParseAddr(a)
		if network == "ip4" && !ip.Unmap().Is4() || network == "ip6" && ip.Is4() {
			continue
		}
		out = append(out, ip)
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func TestPublic(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true},
		{"142.250.74.106", true}, // fcm.googleapis.com
		{"2a00:1450:4001:82f::200a", true},
		{"64:ff9b::808:808", true}, // NAT64 of 8.8.8.8
		{"::ffff:8.8.8.8", true},

		{"127.0.0.1", false},
		{"127.8.9.10", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"10.0.0.1", false},
		{"172.16.5.4", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fd00:ec2::254", false}, // AWS metadata over IPv6
		{"fc00::1", false},
		{"100.64.0.1", false},
		{"100.100.100.200", false}, // a cloud's metadata in shared address space
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"ff02::1", false},
		{"ff05::2", false},
		{"192.0.2.1", false},
		{"198.18.0.1", false},
		{"2001:db8::1", false},
		{"2002:a00:1::", false},       // 6to4 of 10.0.0.1
		{"2001:0:a00:1::", false},     // Teredo
		{"64:ff9b::a00:1", false},     // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", false},    // NAT64 of 127.0.0.1
		{"64:ff9b:1::808:808", false}, // local-use NAT64
		{"::a00:1", false},            // IPv4-compatible
		{"fec0::1", false},            // site-local
		{"100::1", false},             // discard
	} {
		if got := Public(netip.MustParseAddr(c.addr)); got != c.public {
			t.Errorf("Public(%s) = %v, want %v", c.addr, got, c.public)
		}
	}
	if Public(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}

func TestCheckURL(t *testing.T) {
	r := &stub{table: map[string][]string{
		"push.example.com": {"142.250.74.106", "2a00:1450:4001:82f::200a"},
		"internal.corp":    {"10.1.2.3"},
		"mixed.example":    {"142.250.74.106", "127.0.0.1"},
		"meta.example":     {"169.254.169.254"},
		"mapped.example":   {"::ffff:10.0.0.1"},
	}}
	p := Policy{Resolver: r}
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://push.example.com/send/abc", true},
		{"https://push.example.com:8443/x", true},
		{"https://push.example.com./x", false}, // the stub knows no such name: not resolved
		{"https://8.8.8.8/x", true},
		{"https://[2a00:1450:4001:82f::200a]/x", true},

		{"http://push.example.com/x", false},
		{"ftp://push.example.com/x", false},
		{"https://internal.corp/x", false},
		{"https://mixed.example/x", false},
		{"https://meta.example/latest/meta-data", false},
		{"https://mapped.example/", false},
		{"https://nowhere.example/", false},
		{"https://127.0.0.1:6379/", false},
		{"https://169.254.169.254/", false},
		{"https://10.0.0.1/", false},
		{"https://[::1]/", false},
		{"https://[::ffff:127.0.0.1]/", false},
		{"https://[fe80::1%25eth0]/", false},
		{"https://localhost/", false},
		{"https://LOCALHOST./", false},
		{"https://push.localhost/", false},
		{"https://push.example.com:0/", false},
		{"https://push.example.com:99999/", false},
		{"https://xn--e1afmkfd.example/", false}, // not in the stub: does not resolve
		{"https://пример.example/", false},
		{"https://push_service.example/", false},
		{"https:///path", false},
		{"https:push.example.com", false},
		{"//push.example.com/x", false},
		{"", false},
	} {
		err := p.CheckURL(t.Context(), c.url)
		if c.ok != (err == nil) || err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v", c.url, err)
		}
		if err != nil {
			reason, ok := Reason(err)
			if !ok || strings.Contains(reason, "10.1.2.3") || strings.Contains(reason, "169.254") && !strings.Contains(c.url, "169.254") {
				t.Errorf("%s: reason %q (%v) names what the host resolved to", c.url, reason, ok)
			}
		}
	}
	// Allowed private: any address, http too, and nothing is resolved.
	n := r.n.Load()
	open := Policy{AllowPrivate: true, Resolver: r}
	for _, u := range []string{"http://127.0.0.1:6379/", "https://internal.corp/", "http://localhost/x", "https://10.0.0.1/"} {
		if err := open.CheckURL(t.Context(), u); err != nil {
			t.Errorf("allowed private: %s: %v", u, err)
		}
	}
	if err := open.CheckURL(t.Context(), "ftp://127.0.0.1/"); err == nil {
		t.Error("allowed private: ftp accepted")
	}
	if r.n.Load() != n {
		t.Error("allowed private still resolved hosts")
	}
}

// listener is a loopback TCP listener that counts the connections it
// accepts: a refused dial must leave it at zero.
type listener struct {
	ln       net.Listener
	accepted atomic.Int32
	wg       sync.WaitGroup
}

func listen(t *testing.T) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{ln: ln}
	l.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); l.wg.Wait() })
	return l
}

func (l *listener) port() string {
	_, p, _ := net.SplitHostPort(l.ln.Addr().String())
	return p
}

// The Control hook refuses a connection to an address that is not public
// before connect: the loopback listener gets nothing, and no packet goes
// to any other address (Control runs between socket and connect).
func TestControlRefusesBeforeConnect(t *testing.T) {
	l := listen(t)
	d := &net.Dialer{Timeout: time.Second, Control: Policy{}.Control}
	for _, addr := range []string{
		l.ln.Addr().String(),
		net.JoinHostPort("::ffff:127.0.0.1", l.port()),
		"10.0.0.1:443",
		"169.254.169.254:80",
		"192.168.0.1:6379",
		"0.0.0.0:" + l.port(),
		"[::1]:" + l.port(),
		"[fe80::1]:443",
		"[fd00:ec2::254]:80",
		"224.0.0.1:443",
	} {
		c, err := d.DialContext(t.Context(), "tcp", addr)
		if err == nil {
			c.Close()
			t.Errorf("%s: connected", addr)
			continue
		}
		if !errors.Is(err, ErrNotPublic) {
			t.Errorf("%s: %v, want ErrNotPublic", addr, err)
		}
	}
	if n := l.accepted.Load(); n != 0 {
		t.Fatalf("the listener accepted %d connections", n)
	}
	// Allowed private, the same hook lets it through: the test can tell.
	open := &net.Dialer{Timeout: time.Second, Control: Policy{AllowPrivate: true}.Control}
	c, err := open.DialContext(t.Context(), "tcp", l.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, func() bool { return l.accepted.Load() == 1 })
}

// DNS rebinding: a host that resolved to a public address when it was
// checked resolves to loopback when the client connects; the dial is
// refused and the listener on that port gets nothing. A host that
// resolves to a private and a public address connects only to the public
// one (here, as in the subscribe-time check, such a host is refused
// outright).
func TestClientRefusesRebinding(t *testing.T) {
	l := listen(t)
	r := &stub{next: func(host string, n int) []string {
		if n == 0 {
			return []string{"142.250.74.106"} // the check
		}
		return []string{"127.0.0.1"} // every connection after
	}}
	p := Policy{Resolver: r}
	endpoint := "https://rebind.example:" + l.port() + "/push/abc"
	if err := p.CheckURL(t.Context(), endpoint); err != nil {
		t.Fatalf("the first answer is public: %v", err)
	}
	// http, so that a connection that got through would be a request the
	// listener sees.
	resp, err := p.Client().Post("http://rebind.example:"+l.port()+"/push/abc", "application/octet-stream", strings.NewReader("x"))
	if err == nil {
		resp.Body.Close()
		t.Fatal("the request went through")
	}
	if !errors.Is(err, ErrNotPublic) {
		t.Fatalf("%v, want ErrNotPublic", err)
	}
	if r.n.Load() < 2 {
		t.Fatalf("%d lookups: the client did not resolve the host itself", r.n.Load())
	}
	if n := l.accepted.Load(); n != 0 {
		t.Fatalf("the listener accepted %d connections", n)
	}
}

// The client follows no redirect: a 3xx is the answer, and the
// redirect's target (here on loopback, allowed) gets nothing.
func TestClientFollowsNoRedirect(t *testing.T) {
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/inside", code)
		}))
		resp, err := Policy{AllowPrivate: true}.Client().Post(redirector.URL+"/push", "text/plain", strings.NewReader("x"))
		redirector.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("%d: answered %d", code, resp.StatusCode)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the redirect target got %d requests", hits.Load())
	}
}

// Allowed private, the client reaches loopback; refused, it does not, and
// says so.
func TestClientAllowPrivate(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	if _, err := (Policy{}).Client().Get(srv.URL); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("refused: %v", err)
	}
	if hits.Load() != 0 {
		t.Fatal("a refused request arrived")
	}
	resp, err := Policy{AllowPrivate: true}.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hits.Load() != 1 {
		t.Fatalf("%d requests arrived", hits.Load())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testsignal.WaitForWithin(t, 5*time.Second, "the condition", cond)
}
