package e2e

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"storekeeper/internal/pushtest"
	"storekeeper/jobs"
)

// pushSubscription is what a browser's PushSubscription.toJSON gives.
func pushSubscription(t *testing.T, endpoint string) map[string]any {
	t.Helper()
	b := pushtest.NewBrowser(t)
	return map[string]any{"endpoint": endpoint, "expirationTime": nil, "keys": map[string]string{"p256dh": b.P256dh, "auth": b.Auth}}
}

// The Web Push routes: any token (viewer or operator), the same key for
// every caller, subscriptions kept with who made them, bad bodies 400,
// unknown endpoints 404.
func TestPushRoutes(t *testing.T) {
	e := setup(t)
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
	if k, err := jobs.VAPID(t.Context(), e.rdb); err != nil || k.Public != key.body["public_key"] {
		t.Fatalf("served %s; workers sign with %+v (%v)", key.raw, k, err)
	}

	a := e.do("POST", "/api/push/subscriptions", viewerToken, sub)
	id := asString(a.body["id"])
	if a.status != 201 || id != jobs.PushSubscriptionID("https://push.example.com/send/abc") {
		t.Fatalf("subscribe: %d %s", a.status, a.raw)
	}
	rec, err := jobs.PushSubscriptionByID(t.Context(), e.rdb, id)
	if err != nil || rec.Actor != "ann" || rec.SubscribedAt.IsZero() || rec.Keys.P256dh != sub["keys"].(map[string]string)["p256dh"] {
		t.Fatalf("stored %+v, %v", rec, err)
	}
	// Subscribing again (the page does on every load) replaces it.
	if a := e.do("POST", "/api/push/subscriptions", operatorToken, sub); a.status != 201 || a.body["id"] != id {
		t.Fatalf("subscribe again: %d %s", a.status, a.raw)
	}
	if ids, _ := jobs.PushSubscriptionIDs(t.Context(), e.rdb); len(ids) != 1 {
		t.Fatalf("subscriptions %v", ids)
	}
	local := pushSubscription(t, "http://127.0.0.1:9000/push/x")
	if a := e.do("POST", "/api/push/subscriptions", viewerToken, local); a.status != 201 {
		t.Fatalf("loopback push service: %d %s", a.status, a.raw)
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
		"plain http":        pushSubscription(t, "http://push.example.com/x"),
		"not a URL":         pushSubscription(t, "push.example.com/x"),
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
	q := "/api/push/subscriptions?endpoint=" + url.QueryEscape("http://127.0.0.1:9000/push/x")
	if a := e.do("DELETE", q, operatorToken, nil); a.status != 200 {
		t.Fatalf("unsubscribe by query: %d %s", a.status, a.raw)
	}
	if ids, _ := jobs.PushSubscriptionIDs(t.Context(), e.rdb); len(ids) != 0 {
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

func asString(v any) string { s, _ := v.(string); return s }
