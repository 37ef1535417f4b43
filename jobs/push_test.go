package jobs

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
)

// Every node asking for the VAPID keys at once gets the same pair, made
// once, and asking again changes nothing.
func TestVAPIDKeysMadeOnce(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const callers = 8
	got := make([]VAPIDKeys, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		c := srv.Client(t) // a node of its own
		wg.Go(func() { got[i], errs[i] = VAPID(t.Context(), c) })
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("caller %d got %+v, caller 0 %+v", i, got[i], got[0])
		}
	}
	again, err := VAPID(t.Context(), rdb)
	if err != nil || again != got[0] {
		t.Fatalf("again: %+v, %v; want %+v", again, err, got[0])
	}
	if err := got[0].Validate(); err != nil {
		t.Fatal(err)
	}
	pub, err := base64.RawURLEncoding.DecodeString(got[0].Public)
	if err != nil || len(pub) != 65 || pub[0] != 4 {
		t.Fatalf("public key %q is not an unpadded base64url uncompressed point (%v)", got[0].Public, err)
	}
	// Damaged keys are an error, never silently replaced.
	rdb.Set(t.Context(), VAPIDKey, `{"public":"x","private":"y"}`, 0)
	if _, err := VAPID(t.Context(), rdb); err == nil {
		t.Fatal("damaged keys accepted")
	}
}

// browserSubscription is what a browser would send: a fresh P-256 key and
// a 16-byte secret.
func browserSubscription(t *testing.T, endpoint string) PushSubscription {
	t.Helper()
	b := pushtest.NewBrowser(t)
	return PushSubscription{Endpoint: endpoint, Keys: SubscriptionKeys{P256dh: b.P256dh, Auth: b.Auth}}
}

func TestPushSubscriptionValidate(t *testing.T) {
	good := browserSubscription(t, "https://push.example.com/send/abc")
	b64 := base64.RawURLEncoding.EncodeToString
	offCurve := append([]byte{4}, make([]byte, 64)...)
	for _, c := range []struct {
		name string
		edit func(*PushSubscription)
		ok   bool
	}{
		{"browser", func(*PushSubscription) {}, true},
		{"padded base64url", func(s *PushSubscription) { s.Keys.Auth += "==" }, true},
		{"http to loopback", func(s *PushSubscription) { s.Endpoint = "http://127.0.0.1:8080/push" }, true},
		{"http to localhost", func(s *PushSubscription) { s.Endpoint = "http://localhost/push" }, true},
		{"http to ::1", func(s *PushSubscription) { s.Endpoint = "http://[::1]:9/push" }, true},
		{"http elsewhere", func(s *PushSubscription) { s.Endpoint = "http://push.example.com/x" }, false},
		{"other scheme", func(s *PushSubscription) { s.Endpoint = "ftp://push.example.com/x" }, false},
		{"no endpoint", func(s *PushSubscription) { s.Endpoint = "" }, false},
		{"user info", func(s *PushSubscription) { s.Endpoint = "https://u:p@push.example.com/x" }, false},
		{"huge endpoint", func(s *PushSubscription) { s.Endpoint = "https://push.example.com/" + strings.Repeat("a", 3000) }, false},
		{"no keys", func(s *PushSubscription) { s.Keys = SubscriptionKeys{} }, false},
		{"compressed point", func(s *PushSubscription) { s.Keys.P256dh = b64(append([]byte{2}, make([]byte, 32)...)) }, false},
		{"point off the curve", func(s *PushSubscription) { s.Keys.P256dh = b64(offCurve) }, false},
		{"standard base64", func(s *PushSubscription) {
			s.Keys.P256dh = strings.NewReplacer("-", "+", "_", "/").Replace(s.Keys.P256dh) + "+/"
		}, false},
		{"short auth", func(s *PushSubscription) { s.Keys.Auth = b64(make([]byte, 8)) }, false},
	} {
		s := good
		c.edit(&s)
		err := s.Validate()
		if c.ok != (err == nil) || err != nil && !errors.Is(err, ErrBadSubscription) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestPushSubscriptions(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	a := browserSubscription(t, "https://push.example.com/a")
	rec, err := Subscribe(ctx, rdb, a, "ann")
	if err != nil || rec.ID != PushSubscriptionID(a.Endpoint) {
		t.Fatalf("subscribe: %+v, %v", rec, err)
	}
	// The same browser again (new keys): one entry, the new keys.
	a2 := browserSubscription(t, a.Endpoint)
	if _, err := Subscribe(ctx, rdb, a2, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, browserSubscription(t, "https://push.example.com/b"), "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, PushSubscription{Endpoint: "https://x"}, "ann"); !errors.Is(err, ErrBadSubscription) {
		t.Fatalf("bad subscription: %v", err)
	}
	ids, err := PushSubscriptionIDs(ctx, rdb)
	if err != nil || len(ids) != 2 {
		t.Fatalf("ids %v, %v", ids, err)
	}
	got, err := PushSubscriptionByID(ctx, rdb, rec.ID)
	if err != nil || got.Keys != a2.Keys || got.Actor != "bob" || got.Endpoint != a.Endpoint || got.SubscribedAt.IsZero() {
		t.Fatalf("stored %+v, %v", got, err)
	}
	if id, ok := PushSinkID(PushSink(rec.ID)); !ok || id != rec.ID {
		t.Fatalf("sink round trip: %q %v", id, ok)
	}
	if _, ok := PushSinkID("webhook-0123abcd"); ok {
		t.Fatal("a webhook is not a push sink")
	}
	if id, err := Unsubscribe(ctx, rdb, a.Endpoint); err != nil || id != rec.ID {
		t.Fatalf("unsubscribe: %q, %v", id, err)
	}
	if _, err := Unsubscribe(ctx, rdb, a.Endpoint); !errors.Is(err, ErrUnknownSubscription) {
		t.Fatalf("unsubscribe twice: %v", err)
	}
	if _, err := PushSubscriptionByID(ctx, rdb, rec.ID); !errors.Is(err, ErrUnknownSubscription) {
		t.Fatalf("gone subscription: %v", err)
	}
}

// The bound: a full set refuses a new browser, still replaces a known one,
// and takes a new one again once one leaves.
func TestPushSubscriptionsBounded(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	sub := browserSubscription(t, "https://push.example.com/0")
	for i := range MaxPushSubscriptions {
		s := sub
		s.Endpoint = fmt.Sprintf("https://push.example.com/%d", i)
		if _, err := Subscribe(ctx, rdb, s, "ann"); err != nil {
			t.Fatalf("subscription %d: %v", i, err)
		}
	}
	extra := sub
	extra.Endpoint = "https://push.example.com/one-too-many"
	if _, err := Subscribe(ctx, rdb, extra, "ann"); !errors.Is(err, ErrTooManySubscriptions) {
		t.Fatalf("subscription %d: %v, want ErrTooManySubscriptions", MaxPushSubscriptions+1, err)
	}
	if _, err := Subscribe(ctx, rdb, sub, "bob"); err != nil {
		t.Fatalf("replacing a known browser on a full set: %v", err)
	}
	if _, err := Unsubscribe(ctx, rdb, sub.Endpoint); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, extra, "ann"); err != nil {
		t.Fatalf("after one left: %v", err)
	}
}
