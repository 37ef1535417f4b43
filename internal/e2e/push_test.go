package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"storekeeper/api"
	"storekeeper/internal/pushtest"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// pushSubscription is what a browser's PushSubscription.toJSON gives.
func pushSubscription(t *testing.T, endpoint string) map[string]any {
	t.Helper()
	b := pushtest.NewBrowser(t)
	return map[string]any{"endpoint": endpoint, "expirationTime": nil, "keys": map[string]string{"p256dh": b.P256dh, "auth": b.Auth}}
}

// stubResolver resolves push hosts for the API's subscribe-time check:
// these tests never ask a real resolver, nor send anything anywhere but
// loopback.
type stubResolver map[string][]netip.Addr

func (r stubResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a := r[host]; len(a) > 0 {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// pushHosts: push.example.com is a public host, internal.example resolves
// to a private address, rebind.example to loopback.
var pushHosts = stubResolver{
	"push.example.com": {netip.MustParseAddr("142.250.74.106")},
	"internal.example": {netip.MustParseAddr("10.1.2.3")},
	"rebind.example":   {netip.MustParseAddr("127.0.0.1")},
}

const beaToken = "bea-viewer-token-0123456789"

// setupPush is setup with the stub resolver, a second viewer (bea) and
// the API's push options as tweak leaves them.
func setupPush(t *testing.T, tweak func(*api.Config)) *env {
	t.Helper()
	return setupTB(t, func(c *api.Config) {
		c.PushResolver = pushHosts
		more, err := api.ParseTokens("bea:viewer:" + beaToken)
		if err != nil {
			t.Fatal(err)
		}
		c.Tokens = append(c.Tokens, more...)
		if tweak != nil {
			tweak(c)
		}
	})
}

// The Web Push routes: any token (viewer or operator), the same key for
// every caller, subscriptions kept as their token's, bad bodies 400,
// unknown endpoints 404.
func TestPushRoutes(t *testing.T) {
	e := setupPush(t, nil)
	sub := pushSubscription(t, "https://push.example.com/send/abc")
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/push/key", nil},
		{"POST", "/api/push/subscriptions", sub},
		{"DELETE", "/api/push/subscriptions", map[string]string{"endpoint": "https://push.example.com/send/abc"}},
	} {
		for _, tok := range []string{"", "wrong-token-0123456789"} {
			if a := e.do(r.method, r.path, tok, r.body); a.status != 401 || a.body["error"] != "unauthorized" {
				t.Errorf("%s %s with token %q: %d %s", r.method, r.path, tok, a.status, a.raw)
			}
		}
	}

	key := e.do("GET", "/api/push/key", viewerToken, nil)
	pub, err := base64.RawURLEncoding.DecodeString(asString(key.body["public_key"]))
	if key.status != 200 || err != nil || len(pub) != 65 || pub[0] != 4 {
		t.Fatalf("key: %d %s (%v)", key.status, key.raw, err)
	}
	if again := e.do("GET", "/api/push/key", operatorToken, nil); again.body["public_key"] != key.body["public_key"] {
		t.Fatalf("the key changed: %s, then %s", key.raw, again.raw)
	}
	if k, err := jobsdb.VAPID(t.Context(), e.rdb); err != nil || k.Public != key.body["public_key"] {
		t.Fatalf("served %s; workers sign with %+v (%v)", key.raw, k, err)
	}

	a := e.do("POST", "/api/push/subscriptions", viewerToken, sub)
	id := asString(a.body["id"])
	if a.status != 201 || id != jobs.PushSubscriptionID("ann", "https://push.example.com/send/abc") {
		t.Fatalf("subscribe: %d %s", a.status, a.raw)
	}
	rec, err := jobsdb.PushSubscriptionByID(t.Context(), e.rdb, id)
	if err != nil || rec.Owner != "ann" || rec.Actor != "ann" || rec.SubscribedAt.IsZero() || rec.Keys.P256dh != sub["keys"].(map[string]string)["p256dh"] {
		t.Fatalf("stored %+v, %v", rec, err)
	}
	// Subscribing again (the page does on every load) replaces it.
	if a := e.do("POST", "/api/push/subscriptions", viewerToken, sub); a.status != 201 || a.body["id"] != id {
		t.Fatalf("subscribe again: %d %s", a.status, a.raw)
	}
	if ids, _ := jobsdb.PushSubscriptionIDs(t.Context(), e.rdb); len(ids) != 1 {
		t.Fatalf("subscriptions %v", ids)
	}

	withKeys := func(p256dh, auth string) map[string]any {
		s := pushSubscription(t, "https://push.example.com/send/def")
		keys := s["keys"].(map[string]string)
		if p256dh != "" {
			keys["p256dh"] = p256dh
		}
		if auth != "" {
			keys["auth"] = auth
		}
		return s
	}
	b64 := base64.RawURLEncoding.EncodeToString
	for name, body := range map[string]any{
		"no body":           nil,
		"not json":          "{not json",
		"two values":        `{} {}`,
		"unknown field":     map[string]any{"endpoint": "https://push.example.com/x", "keys": sub["keys"], "color": "red"},
		"no keys":           map[string]any{"endpoint": "https://push.example.com/x"},
		"not a URL":         pushSubscription(t, "push.example.com/x"),
		"other scheme":      pushSubscription(t, "ftp://push.example.com/x"),
		"short p256dh":      withKeys(b64(make([]byte, 33)), ""),
		"p256dh off curve":  withKeys(b64(append([]byte{4}, make([]byte, 64)...)), ""),
		"p256dh not base64": withKeys("!!!!", ""),
		"long auth":         withKeys("", b64(make([]byte, 32))),
	} {
		if a := e.do("POST", "/api/push/subscriptions", viewerToken, body); a.status != 400 || a.body["error"] != "invalid_request" {
			t.Errorf("%s: %d %s", name, a.status, a.raw)
		}
	}

	// Unsubscribe by body or by query; unknown endpoints are 404.
	if a := e.do("DELETE", "/api/push/subscriptions", viewerToken, map[string]string{"endpoint": "https://push.example.com/send/abc"}); a.status != 200 || a.body["id"] != id {
		t.Fatalf("unsubscribe: %d %s", a.status, a.raw)
	}
	if a := e.do("DELETE", "/api/push/subscriptions", viewerToken, map[string]string{"endpoint": "https://push.example.com/send/abc"}); a.status != 404 || a.body["error"] != "not_found" {
		t.Fatalf("unsubscribe twice: %d %s", a.status, a.raw)
	}
	other := pushSubscription(t, "https://push.example.com/push/x")
	if a := e.do("POST", "/api/push/subscriptions", viewerToken, other); a.status != 201 {
		t.Fatalf("subscribe: %d %s", a.status, a.raw)
	}
	q := "/api/push/subscriptions?endpoint=" + url.QueryEscape("https://push.example.com/push/x")
	if a := e.do("DELETE", q, viewerToken, nil); a.status != 200 {
		t.Fatalf("unsubscribe by query: %d %s", a.status, a.raw)
	}
	if ids, _ := jobsdb.PushSubscriptionIDs(t.Context(), e.rdb); len(ids) != 0 {
		t.Fatalf("subscriptions left: %v", ids)
	}
	for name, c := range map[string]struct {
		path string
		body any
	}{
		"no endpoint":        {"/api/push/subscriptions", nil},
		"unknown field":      {"/api/push/subscriptions", map[string]string{"url": "https://push.example.com/x"}},
		"body and query":     {"/api/push/subscriptions?endpoint=https%3A%2F%2Fa", map[string]string{"endpoint": "https://b"}},
		"empty query":        {"/api/push/subscriptions?endpoint=", nil},
		"whitespace in body": {"/api/push/subscriptions", strings.Repeat(" ", 10)},
	} {
		if a := e.do("DELETE", c.path, viewerToken, c.body); a.status != 400 || a.body["error"] != "invalid_request" {
			t.Errorf("DELETE %s: %d %s", name, a.status, a.raw)
		}
	}
}

// The SSRF regression at subscribe time: by default an endpoint must be
// https to a host that resolves to public addresses only. A viewer's
// http://127.0.0.1:<port> (a live listener here), localhost's Redis, the
// metadata address, private networks and names that resolve to them are
// 400 push_endpoint_refused, nothing is kept and nothing is sent; the
// answer never says what a name resolved to. With PushAllowPrivate (the
// --push-allow-private flag) they are taken. (Today's code keeps the
// loopback ones and https to any address.)
func TestPushSubscribeRefusesPrivate(t *testing.T) {
	var hits atomic.Int32
	local := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(local.Close)
	port := local.Listener.Addr().(*net.TCPAddr).Port
	endpoints := []string{
		local.URL + "/push/x", // http://127.0.0.1:<port>/push/x
		fmt.Sprintf("https://127.0.0.1:%d/push/x", port),
		fmt.Sprintf("https://[::1]:%d/push/x", port),
		fmt.Sprintf("https://[::ffff:127.0.0.1]:%d/push/x", port),
		"http://localhost:6379/",
		"https://localhost:6379/",
		"https://169.254.169.254/latest/meta-data/",
		"https://10.0.0.1/",
		"https://internal.example/push",
		fmt.Sprintf("https://rebind.example:%d/push", port),
		"https://unknown.example/push",
		"http://push.example.com/push", // public, but not https
	}
	e := setupPush(t, nil)
	for _, ep := range endpoints {
		a := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, ep))
		if a.status != 400 || a.body["error"] != "push_endpoint_refused" {
			t.Errorf("%s: %d %s", ep, a.status, a.raw)
		}
		if msg := asString(a.body["message"]); strings.Contains(msg, "10.1.2.3") || strings.Contains(ep, "rebind") && strings.Contains(msg, "127.0.0.1") {
			t.Errorf("%s: the answer says what the host resolved to: %s", ep, msg)
		}
	}
	if ids, _ := jobsdb.PushSubscriptionIDs(t.Context(), e.rdb); len(ids) != 0 {
		t.Fatalf("refused endpoints kept: %v", ids)
	}
	if a := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, "https://push.example.com/push")); a.status != 201 {
		t.Fatalf("a public https endpoint: %d %s", a.status, a.raw)
	}

	open := setupPush(t, func(c *api.Config) { c.PushAllowPrivate, c.PushSubscriptionsPerToken = true, len(endpoints) })
	for _, ep := range endpoints {
		if a := open.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, ep)); a.status != 201 {
			t.Errorf("allowed private: %s: %d %s", ep, a.status, a.raw)
		}
	}
	if a := open.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, "ftp://127.0.0.1/x")); a.status != 400 || a.body["error"] != "invalid_request" {
		t.Errorf("allowed private, ftp: %d %s", a.status, a.raw)
	}
	if hits.Load() != 0 {
		t.Fatalf("subscribing sent %d requests to the endpoint", hits.Load())
	}
}

// A subscription is its token's: two tokens subscribing one endpoint get
// an entry each; a token may keep 8 (then 409 too_many_subscriptions,
// others unaffected); a viewer's unsubscribe of an endpoint another token
// subscribed is 404, exactly as for an endpoint nobody subscribed (so it
// tells nothing), and removes nothing; an operator's removes every
// token's. (Today's code keeps one entry per endpoint, one global bound
// of 256, and lets any token delete any subscription.)
func TestPushOwnership(t *testing.T) {
	e := setupPush(t, nil)
	shared := "https://push.example.com/shared"
	ann := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, shared))
	bea := e.do("POST", "/api/push/subscriptions", beaToken, pushSubscription(t, shared))
	if ann.status != 201 || bea.status != 201 || ann.body["id"] == bea.body["id"] {
		t.Fatalf("two tokens, one endpoint: %s, %s", ann.raw, bea.raw)
	}
	if ids, _ := jobsdb.PushSubscriptionIDs(t.Context(), e.rdb); len(ids) != 2 {
		t.Fatalf("subscriptions %v, want one per token", ids)
	}
	for tok, id := range map[string]any{"ann": ann.body["id"], "bea": bea.body["id"]} {
		if rec, err := jobsdb.PushSubscriptionByID(t.Context(), e.rdb, asString(id)); err != nil || rec.Owner != tok || rec.Endpoint != shared {
			t.Fatalf("%s's: %+v, %v", tok, rec, err)
		}
	}
	// Bea subscribing again takes nothing from ann.
	if a := e.do("POST", "/api/push/subscriptions", beaToken, pushSubscription(t, shared)); a.status != 201 || a.body["id"] != bea.body["id"] {
		t.Fatalf("bea again: %d %s", a.status, a.raw)
	}
	if rec, err := jobsdb.PushSubscriptionByID(t.Context(), e.rdb, asString(ann.body["id"])); err != nil || rec.Owner != "ann" {
		t.Fatalf("ann's after bea's again: %+v, %v", rec, err)
	}

	// Ann's bound: 8 (the shared one and 7 more), then 409.
	for i := range jobs.DefaultPushSubscriptionsPerToken - 1 {
		if a := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, fmt.Sprintf("https://push.example.com/ann/%d", i))); a.status != 201 {
			t.Fatalf("ann's subscription %d: %d %s", i+2, a.status, a.raw)
		}
	}
	a := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, "https://push.example.com/ann/one-too-many"))
	if a.status != 409 || a.body["error"] != "too_many_subscriptions" || !strings.Contains(asString(a.body["message"]), "token ann has 8") {
		t.Fatalf("ann's 9th: %d %s", a.status, a.raw)
	}
	if a := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, shared)); a.status != 201 {
		t.Fatalf("ann renewing one at her bound: %d %s", a.status, a.raw)
	}
	if a := e.do("POST", "/api/push/subscriptions", beaToken, pushSubscription(t, "https://push.example.com/bea/2")); a.status != 201 {
		t.Fatalf("bea held back by ann's bound: %d %s", a.status, a.raw)
	}

	// Ann cannot remove bea's: 404, the same answer as for nobody's.
	onlyBeas := "https://push.example.com/bea/2"
	mine := e.do("DELETE", "/api/push/subscriptions", viewerToken, map[string]string{"endpoint": onlyBeas})
	nobodys := e.do("DELETE", "/api/push/subscriptions", viewerToken, map[string]string{"endpoint": "https://push.example.com/nobody"})
	if mine.status != 404 || mine.body["error"] != "not_found" || nobodys.status != 404 || nobodys.body["error"] != "not_found" {
		t.Fatalf("ann deleting bea's: %d %s; nobody's: %d %s", mine.status, mine.raw, nobodys.status, nobodys.raw)
	}
	if _, err := jobsdb.PushSubscriptionByID(t.Context(), e.rdb, jobs.PushSubscriptionID("bea", onlyBeas)); err != nil {
		t.Fatalf("bea's removed by ann: %v", err)
	}
	// Ann removing the shared endpoint removes only hers.
	if a := e.do("DELETE", "/api/push/subscriptions", viewerToken, map[string]string{"endpoint": shared}); a.status != 200 || a.body["id"] != ann.body["id"] {
		t.Fatalf("ann unsubscribes: %d %s", a.status, a.raw)
	}
	if _, err := jobsdb.PushSubscriptionByID(t.Context(), e.rdb, asString(bea.body["id"])); err != nil {
		t.Fatalf("ann's unsubscribe took bea's: %v", err)
	}
	// An operator removes any: every token's subscription of the endpoint.
	if a := e.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, shared)); a.status != 201 {
		t.Fatal(a.raw)
	}
	if a := e.do("DELETE", "/api/push/subscriptions", operatorToken, map[string]string{"endpoint": shared}); a.status != 200 || a.body["deleted"] != true {
		t.Fatalf("operator unsubscribes: %d %s", a.status, a.raw)
	}
	for _, tok := range []string{"ann", "bea"} {
		if _, err := jobsdb.PushSubscriptionByID(t.Context(), e.rdb, jobs.PushSubscriptionID(tok, shared)); err == nil {
			t.Errorf("%s's survived the operator's unsubscribe", tok)
		}
	}
	if a := e.do("DELETE", "/api/push/subscriptions", operatorToken, map[string]string{"endpoint": onlyBeas}); a.status != 200 || a.body["id"] != jobs.PushSubscriptionID("bea", onlyBeas) {
		t.Fatalf("operator unsubscribes bea's: %d %s", a.status, a.raw)
	}
	if a := e.do("DELETE", "/api/push/subscriptions", operatorToken, map[string]string{"endpoint": onlyBeas}); a.status != 404 {
		t.Fatalf("operator again: %d %s", a.status, a.raw)
	}
	// A smaller bound from the configuration.
	few := setupPush(t, func(c *api.Config) { c.PushSubscriptionsPerToken = 1 })
	if a := few.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, "https://push.example.com/1")); a.status != 201 {
		t.Fatal(a.raw)
	}
	if a := few.do("POST", "/api/push/subscriptions", viewerToken, pushSubscription(t, "https://push.example.com/2")); a.status != 409 {
		t.Fatalf("PushSubscriptionsPerToken 1: %d %s", a.status, a.raw)
	}
}

func asString(v any) string { s, _ := v.(string); return s }
