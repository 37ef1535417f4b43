package jobs

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"storekeeper/internal/netguard"
)

// fuzzResolver answers every host with the same addresses and keeps the
// names it was asked.
type fuzzResolver struct {
	addrs []netip.Addr
	mu    sync.Mutex
	asked []string
}

func (r *fuzzResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.asked = append(r.asked, host)
	r.mu.Unlock()
	if len(r.addrs) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return r.addrs, nil
}

// fuzzAddrs makes up to four addresses of b: a tag byte, then 4 bytes of
// IPv4 (tag bit 0 clear; bit 1 set: written IPv4-mapped) or 16 of IPv6.
func fuzzAddrs(b []byte) []netip.Addr {
	var out []netip.Addr
	for len(b) > 0 && len(out) < 4 {
		tag := b[0]
		b = b[1:]
		if tag&1 == 0 {
			if len(b) < 4 {
				break
			}
			a := netip.AddrFrom4([4]byte(b[:4]))
			if tag&2 != 0 {
				a = netip.AddrFrom16(a.As16())
			}
			out, b = append(out, a), b[4:]
			continue
		}
		if len(b) < 16 {
			break
		}
		out, b = append(out, netip.AddrFrom16([16]byte(b[:16]))), b[16:]
	}
	return out
}

// neverPublic is an independent statement (net.IP's predicates, and a
// few ranges written out) of addresses a push must never reach; Public
// may refuse more, never less.
func neverPublic(a netip.Addr) bool {
	if a.Zone() != "" {
		return true
	}
	ip := net.IP(a.AsSlice())
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || !ip.IsGlobalUnicast() {
		return true
	}
	for _, cidr := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
		"fc00::/7", "fe80::/10", "::/96",
		"64:ff9b::a00:0/104", "64:ff9b::7f00:0/104", "64:ff9b::a9fe:0/112", "64:ff9b::c0a8:0/112", // NAT64 of private IPv4
		"2002:a00::/24", "2002:7f00::/24", "2002:a9fe::/32", "2002:c0a8::/32", // 6to4 of private IPv4
	} {
		if _, n, _ := net.ParseCIDR(cidr); n.Contains(ip) {
			return true
		}
	}
	return false
}

// FuzzPushEndpoint: CheckPushEndpoint, with a resolver that answers any
// host with the fuzzed addresses, accepts only https to a host that is a
// public IP address, or a DNS name it resolved (the very name the HTTP
// client will dial) to addresses all public; the dial-time Control hook
// agrees with it on every address; allowing private addresses refuses
// nothing more; and a refusal never names an address the caller did not
// give. Seeds are in testdata/fuzz/FuzzPushEndpoint; `go test` runs only
// them.
func FuzzPushEndpoint(f *testing.F) {
	v4 := func(a string) []byte { b := netip.MustParseAddr(a).As4(); return append([]byte{0}, b[:]...) }
	v6 := func(a string) []byte { b := netip.MustParseAddr(a).As16(); return append([]byte{1}, b[:]...) }
	f.Add("https://push.example.com/send/abc", v4("142.250.74.106"))
	f.Add("https://push.example.com/send/abc", append(v4("142.250.74.106"), v4("127.0.0.1")...))
	f.Add("https://push.example.com/x", v4("10.0.0.1"))
	f.Add("https://push.example.com/x", v6("64:ff9b::a00:1"))
	f.Add("http://127.0.0.1:6379/", []byte(nil))
	f.Add("https://[::ffff:127.0.0.1]/", []byte(nil))
	f.Add("https://ｌｏｃａｌｈｏｓｔ/", v4("127.0.0.1"))

	f.Fuzz(func(t *testing.T, endpoint string, addrBytes []byte) {
		ctx := context.Background()
		addrs := fuzzAddrs(addrBytes)
		r := &fuzzResolver{addrs: addrs}
		p := netguard.Policy{Resolver: r}
		err := CheckPushEndpoint(ctx, p, endpoint)
		asked := append([]string(nil), r.asked...)
		open := CheckPushEndpoint(ctx, netguard.Policy{AllowPrivate: true, Resolver: r}, endpoint)

		// The dial-time check and the subscribe-time one agree.
		for _, a := range addrs {
			control := p.Control("tcp", netip.AddrPortFrom(a, 443).String(), nil)
			if (control == nil) != netguard.Public(a) {
				t.Fatalf("Control(%s) = %v, Public = %v", a, control, netguard.Public(a))
			}
			if control == nil && neverPublic(a) {
				t.Fatalf("Control lets %s through", a)
			}
			if control != nil && !errors.Is(control, netguard.ErrNotPublic) {
				t.Fatalf("Control(%s): %v", a, control)
			}
		}
		if err == nil && open != nil {
			t.Fatalf("allowed by the strict policy, refused allowing private: %v", open)
		}
		if err != nil {
			if !errors.Is(err, ErrEndpointRefused) || !errors.Is(err, ErrBadSubscription) {
				t.Fatalf("refusal %v is not ErrEndpointRefused", err)
			}
			for _, a := range addrs {
				if s := a.String(); len(s) > 4 && !strings.Contains(endpoint, s) && strings.Contains(err.Error(), s) {
					t.Fatalf("the refusal %q names %s, which the host resolved to", err, s)
				}
			}
			return
		}
		u, perr := url.Parse(endpoint)
		if perr != nil || u.Scheme != "https" || u.User != nil || u.Fragment != "" {
			t.Fatalf("accepted %q: %+v, %v", endpoint, u, perr)
		}
		host := u.Hostname()
		if host == "" {
			t.Fatalf("accepted %q with no host", endpoint)
		}
		for i := 0; i < len(host); i++ {
			if host[i] >= 0x80 {
				t.Fatalf("accepted the non-ASCII host %q (the HTTP client would map it)", host)
			}
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if neverPublic(ip) || !netguard.Public(ip) {
				t.Fatalf("accepted the address %s", ip)
			}
			return
		}
		if len(asked) != 1 || asked[0] != host {
			t.Fatalf("accepted %q having resolved %q, not its host %q", endpoint, asked, host)
		}
		if len(addrs) == 0 {
			t.Fatalf("accepted %q, which does not resolve", endpoint)
		}
		for _, a := range addrs {
			if neverPublic(a) || !netguard.Public(a) {
				t.Fatalf("accepted %q, which resolves to %s", endpoint, a)
			}
		}
		if name := strings.ToLower(strings.TrimSuffix(host, ".")); name == "localhost" || strings.HasSuffix(name, ".localhost") {
			t.Fatalf("accepted %q", endpoint)
		}
	})
}
