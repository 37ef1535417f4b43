package jobsdb

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/netguard"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// Every node asking for the VAPID keys at once gets the same pair, made
// once, and asking again changes nothing.
func TestVAPIDKeysMadeOnce(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const callers = 8
	got := make([]jobs.VAPIDKeys, callers)
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
	rdb.Set(t.Context(), keyspace.VAPIDKey, `{"public":"x","private":"y"}`, 0)
	if _, err := VAPID(t.Context(), rdb); err == nil {
		t.Fatal("damaged keys accepted")
	}
}

// browserSubscription is what a browser would send: a fresh P-256 key and
// a 16-byte secret.
func browserSubscription(t *testing.T, endpoint string) jobs.PushSubscription {
	t.Helper()
	b := pushtest.NewBrowser(t)
	return jobs.PushSubscription{Endpoint: endpoint, Keys: jobs.SubscriptionKeys{P256dh: b.P256dh, Auth: b.Auth}}
}

// stubResolver answers from a table; these tests never ask a real
// resolver.
type stubResolver map[string][]netip.Addr

func (r stubResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a := r[host]; len(a) > 0 {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// public is the policy the tests subscribe with: push.example.com is a
// public host, internal.example a private one.
var public = jobs.SubscribeOptions{Policy: netguard.Policy{Resolver: stubResolver{
	"push.example.com": {netip.MustParseAddr("142.250.74.106")},
	"internal.example": {netip.MustParseAddr("10.1.2.3")},
}}}

// The form of a subscription: an absolute http(s) endpoint and a
// browser's keys. Where the endpoint may lead is CheckPushEndpoint's.
func TestPushSubscriptionValidate(t *testing.T) {
	good := browserSubscription(t, "https://push.example.com/send/abc")
	b64 := base64.RawURLEncoding.EncodeToString
	offCurve := append([]byte{4}, make([]byte, 64)...)
	for _, c := range []struct {
		name string
		edit func(*jobs.PushSubscription)
		ok   bool
	}{
		{"browser", func(*jobs.PushSubscription) {}, true},
		{"padded base64url", func(s *jobs.PushSubscription) { s.Keys.Auth += "==" }, true},
		{"http (the policy decides)", func(s *jobs.PushSubscription) { s.Endpoint = "http://push.example.com/x" }, true},
		{"other scheme", func(s *jobs.PushSubscription) { s.Endpoint = "ftp://push.example.com/x" }, false},
		{"no endpoint", func(s *jobs.PushSubscription) { s.Endpoint = "" }, false},
		{"user info", func(s *jobs.PushSubscription) { s.Endpoint = "https://u:p@push.example.com/x" }, false},
		{"fragment", func(s *jobs.PushSubscription) { s.Endpoint = "https://push.example.com/x#y" }, false},
		{"huge endpoint", func(s *jobs.PushSubscription) { s.Endpoint = "https://push.example.com/" + strings.Repeat("a", 3000) }, false},
		{"no keys", func(s *jobs.PushSubscription) { s.Keys = jobs.SubscriptionKeys{} }, false},
		{"compressed point", func(s *jobs.PushSubscription) { s.Keys.P256dh = b64(append([]byte{2}, make([]byte, 32)...)) }, false},
		{"point off the curve", func(s *jobs.PushSubscription) { s.Keys.P256dh = b64(offCurve) }, false},
		{"standard base64", func(s *jobs.PushSubscription) {
			s.Keys.P256dh = strings.NewReplacer("-", "+", "_", "/").Replace(s.Keys.P256dh) + "+/"
		}, false},
		{"short auth", func(s *jobs.PushSubscription) { s.Keys.Auth = b64(make([]byte, 8)) }, false},
	} {
		s := good
		c.edit(&s)
		err := s.Validate()
		if c.ok != (err == nil) || err != nil && !errors.Is(err, jobs.ErrBadSubscription) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// Where an endpoint may lead: https to a host with public addresses only,
// unless private addresses are allowed (which allows http too).
func TestCheckPushEndpoint(t *testing.T) {
	open := netguard.Policy{AllowPrivate: true}
	for _, c := range []struct {
		endpoint      string
		public, local bool // allowed by the default policy, by AllowPrivate
	}{
		{"https://push.example.com/send/abc", true, true},
		{"https://142.250.74.106/send/abc", true, true},
		{"http://push.example.com/x", false, true},
		{"http://127.0.0.1:6379/", false, true},
		{"http://localhost:6379/", false, true},
		{"https://169.254.169.254/latest/meta-data/", false, true},
		{"https://10.0.0.1/", false, true},
		{"https://[::1]:9/push", false, true},
		{"https://internal.example/x", false, true},
		{"https://unknown.example/x", false, true},
		{"https://u:p@push.example.com/x", false, false},
		{"https://push.example.com/x#frag", false, false},
		{"ftp://push.example.com/x", false, false},
		{"push.example.com/x", false, false},
		{"https://push.example.com/" + strings.Repeat("a", 3000), false, false},
	} {
		for _, p := range []struct {
			policy netguard.Policy
			ok     bool
		}{{public.Policy, c.public}, {open, c.local}} {
			err := jobs.CheckPushEndpoint(t.Context(), p.policy, c.endpoint)
			if p.ok != (err == nil) || err != nil && (!errors.Is(err, jobs.ErrEndpointRefused) || !errors.Is(err, jobs.ErrBadSubscription)) {
				t.Errorf("%.60s (allow private %v): %v", c.endpoint, p.policy.AllowPrivate, err)
			}
			if err != nil && strings.Contains(err.Error(), "10.1.2.3") {
				t.Errorf("%s: the error names what the host resolved to: %v", c.endpoint, err)
			}
		}
	}
}

// A subscription is its token's: two tokens subscribing one endpoint
// have an entry each, a token subscribing again replaces only its own,
// and unsubscribing removes only the caller's.
func TestPushSubscriptions(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	a := browserSubscription(t, "https://push.example.com/a")
	rec, err := Subscribe(ctx, rdb, a, "ann", public)
	if err != nil || rec.ID != jobs.PushSubscriptionID("ann", a.Endpoint) || rec.Owner != "ann" || len(rec.ID) != 32 {
		t.Fatalf("subscribe: %+v, %v", rec, err)
	}
	// Another token, the same browser: an entry of its own.
	b := browserSubscription(t, a.Endpoint)
	bob, err := Subscribe(ctx, rdb, b, "bob", public)
	if err != nil || bob.ID == rec.ID || bob.ID != jobs.PushSubscriptionID("bob", a.Endpoint) {
		t.Fatalf("bob: %+v, %v", bob, err)
	}
	// Ann's browser again (new keys): still one entry of ann's, the new keys.
	a2 := browserSubscription(t, a.Endpoint)
	if again, err := Subscribe(ctx, rdb, a2, "ann", public); err != nil || again.ID != rec.ID {
		t.Fatalf("again: %+v, %v", again, err)
	}
	if _, err := Subscribe(ctx, rdb, browserSubscription(t, "https://push.example.com/b"), "ann", public); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, jobs.PushSubscription{Endpoint: "https://x"}, "ann", public); !errors.Is(err, jobs.ErrBadSubscription) {
		t.Fatalf("bad subscription: %v", err)
	}
	if _, err := Subscribe(ctx, rdb, browserSubscription(t, "http://127.0.0.1:6379/"), "ann", public); !errors.Is(err, jobs.ErrEndpointRefused) {
		t.Fatalf("loopback endpoint: %v", err)
	}
	ids, err := PushSubscriptionIDs(ctx, rdb)
	if err != nil || len(ids) != 3 {
		t.Fatalf("ids %v, %v", ids, err)
	}
	got, err := PushSubscriptionByID(ctx, rdb, rec.ID)
	if err != nil || got.Keys != a2.Keys || got.Owner != "ann" || got.Actor != "ann" || got.Endpoint != a.Endpoint || got.SubscribedAt.IsZero() {
		t.Fatalf("stored %+v, %v", got, err)
	}
	if got, err := PushSubscriptionByID(ctx, rdb, bob.ID); err != nil || got.Keys != b.Keys || got.Owner != "bob" {
		t.Fatalf("bob's %+v, %v", got, err)
	}
	if id, ok := jobs.PushSinkID(jobs.PushSink(rec.ID)); !ok || id != rec.ID {
		t.Fatalf("sink round trip: %q %v", id, ok)
	}
	if _, ok := jobs.PushSinkID("webhook-0123abcd"); ok {
		t.Fatal("a webhook is not a push sink")
	}
	// Carol has none of that endpoint: unknown, whoever else has it.
	if _, err := Unsubscribe(ctx, rdb, "carol", a.Endpoint); !errors.Is(err, jobs.ErrUnknownSubscription) {
		t.Fatalf("carol unsubscribes ann's: %v", err)
	}
	if id, err := Unsubscribe(ctx, rdb, "ann", a.Endpoint); err != nil || id != rec.ID {
		t.Fatalf("unsubscribe: %q, %v", id, err)
	}
	if _, err := Unsubscribe(ctx, rdb, "ann", a.Endpoint); !errors.Is(err, jobs.ErrUnknownSubscription) {
		t.Fatalf("unsubscribe twice: %v", err)
	}
	if _, err := PushSubscriptionByID(ctx, rdb, rec.ID); !errors.Is(err, jobs.ErrUnknownSubscription) {
		t.Fatalf("gone subscription: %v", err)
	}
	if _, err := PushSubscriptionByID(ctx, rdb, bob.ID); err != nil {
		t.Fatalf("ann's unsubscribe took bob's: %v", err)
	}
	// An operator's: every token's subscription of the endpoint.
	if _, err := Subscribe(ctx, rdb, a2, "ann", public); err != nil {
		t.Fatal(err)
	}
	if ids, err := UnsubscribeEndpoint(ctx, rdb, a.Endpoint); err != nil || len(ids) != 2 || !slices.Contains(ids, rec.ID) || !slices.Contains(ids, bob.ID) {
		t.Fatalf("unsubscribe the endpoint: %v, %v", ids, err)
	}
	if _, err := UnsubscribeEndpoint(ctx, rdb, a.Endpoint); !errors.Is(err, jobs.ErrUnknownSubscription) {
		t.Fatalf("again: %v", err)
	}
	for _, owner := range []string{"ann", "bob"} {
		n, _ := rdb.SCard(ctx, keyspace.PushOwnerKey(owner)).Result()
		if want := map[string]int64{"ann": 1, "bob": 0}[owner]; n != want {
			t.Errorf("%s's index has %d, want %d", owner, n, want)
		}
	}
}

// The bound is per token: a token with PerToken subscriptions is refused
// one more, still replaces a known one, and may add one again once one
// leaves; another token is not held back by it.
func TestPushSubscriptionsBoundedPerToken(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	sub := browserSubscription(t, "https://push.example.com/0")
	endpoint := func(i int) jobs.PushSubscription {
		s := sub
		s.Endpoint = fmt.Sprintf("https://push.example.com/%d", i)
		return s
	}
	for i := range jobs.DefaultPushSubscriptionsPerToken {
		if _, err := Subscribe(ctx, rdb, endpoint(i), "ann", public); err != nil {
			t.Fatalf("subscription %d: %v", i, err)
		}
	}
	extra := endpoint(100)
	_, err := Subscribe(ctx, rdb, extra, "ann", public)
	if !errors.Is(err, jobs.ErrTooManySubscriptions) || !strings.Contains(err.Error(), "ann has 8") {
		t.Fatalf("subscription %d: %v, want ErrTooManySubscriptions", jobs.DefaultPushSubscriptionsPerToken+1, err)
	}
	if _, err := Subscribe(ctx, rdb, extra, "bob", public); err != nil {
		t.Fatalf("bob is held back by ann's bound: %v", err)
	}
	if _, err := Subscribe(ctx, rdb, browserSubscription(t, sub.Endpoint), "ann", public); err != nil {
		t.Fatalf("replacing a known browser at the bound: %v", err)
	}
	if _, err := Unsubscribe(ctx, rdb, "ann", sub.Endpoint); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, extra, "ann", public); err != nil {
		t.Fatalf("after one left: %v", err)
	}
	// A node of the first layout forgets one without the index: the
	// bound counts what is there.
	if err := rdb.HDel(ctx, keyspace.PushSubscriptionsKey, jobs.PushSubscriptionID("ann", endpoint(1).Endpoint)).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, endpoint(101), "ann", public); err != nil {
		t.Fatalf("after one was forgotten without the index: %v", err)
	}
	// A smaller bound from the options.
	few := public
	few.PerToken = 1
	if _, err := Subscribe(ctx, rdb, endpoint(0), "carol", few); err != nil {
		t.Fatal(err)
	}
	if _, err := Subscribe(ctx, rdb, endpoint(1), "carol", few); !errors.Is(err, jobs.ErrTooManySubscriptions) {
		t.Fatalf("carol's second with PerToken 1: %v", err)
	}
	ids, _ := PushSubscriptionIDs(ctx, rdb)
	if len(ids) != jobs.DefaultPushSubscriptionsPerToken+2 {
		t.Fatalf("%d subscriptions, want 8 of ann's, bob's and carol's", len(ids))
	}
}

// Subscriptions of the first layout (one entry per endpoint, under the
// endpoint's id, with the token name as actor) move to their owner's id
// when a node lists them: newest first and at most 8 per owner; an
// owner's own newer entry of the same endpoint wins; an entry with no
// actor is dropped. A notify job queued with an old id still finds its
// subscription.
func TestPushSubscriptionsMigrated(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	old := func(endpoint, actor string, at time.Time) string {
		t.Helper()
		id := jobs.LegacyPushSubscriptionID(endpoint)
		b, _ := json.Marshal(map[string]any{"id": id, "endpoint": endpoint, "keys": browserSubscription(t, endpoint).Keys,
			"actor": actor, "subscribed_at": at})
		if err := rdb.HSet(ctx, keyspace.PushSubscriptionsKey, id, b).Err(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	t0 := time.Now().Add(-time.Hour).UTC()
	annOld := old("https://push.example.com/ann", "ann", t0)
	for i := range 10 { // mallory filled the old global bound
		old(fmt.Sprintf("https://push.example.com/m%d", i), "mallory", t0.Add(time.Duration(i)*time.Minute))
	}
	old("https://push.example.com/nobody", "", t0)
	_ = rdb.HSet(ctx, keyspace.PushSubscriptionsKey, jobs.LegacyPushSubscriptionID("garbage"), "{not json").Err()
	// Bob subscribes anew (which moves every old entry there is), then an
	// old entry of the same endpoint of his appears (a node of the first
	// layout): the listing moves it, and his newer entry wins.
	bobSub := browserSubscription(t, "https://push.example.com/bob")
	if _, err := Subscribe(ctx, rdb, bobSub, "bob", public); err != nil {
		t.Fatal(err)
	}
	bobOld := old("https://push.example.com/bob", "bob", t0)

	ids, err := PushSubscriptionIDs(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for _, id := range ids {
		if len(id) != 32 {
			t.Errorf("id %s of the first layout left", id)
		}
		rec, err := PushSubscriptionByID(ctx, rdb, id)
		if err != nil || rec.ID != id || rec.ID != jobs.PushSubscriptionID(rec.Owner, rec.Endpoint) {
			t.Fatalf("%s: %+v, %v", id, rec, err)
		}
		owners[rec.Owner]++
		if rec.Owner == "mallory" && rec.Endpoint < "https://push.example.com/m2" {
			t.Errorf("mallory's oldest kept over the newer: %s", rec.Endpoint)
		}
	}
	if owners["ann"] != 1 || owners["bob"] != 1 || owners["mallory"] != jobs.DefaultPushSubscriptionsPerToken || len(owners) != 3 {
		t.Fatalf("owners after the move: %v", owners)
	}
	for owner, n := range owners {
		if got, _ := rdb.SCard(ctx, keyspace.PushOwnerKey(owner)).Result(); got != int64(n) {
			t.Errorf("%s's index has %d, want %d", owner, got, n)
		}
	}
	// A notify job of before the move finds the subscription by its old id.
	rec, err := PushSubscriptionByID(ctx, rdb, annOld)
	if err != nil || rec.ID != jobs.PushSubscriptionID("ann", "https://push.example.com/ann") || rec.Owner != "ann" {
		t.Fatalf("by the old id: %+v, %v", rec, err)
	}
	if rec, err := PushSubscriptionByID(ctx, rdb, bobOld); err != nil || rec.ID != jobs.PushSubscriptionID("bob", "https://push.example.com/bob") || rec.Keys != bobSub.Keys {
		t.Fatalf("bob's by the old id: %+v, %v", rec, err)
	}
	if ttl, _ := rdb.TTL(ctx, keyspace.PushMovedKey).Result(); ttl <= 0 || ttl > pushMovedTTL {
		t.Fatalf("the moved map's TTL is %v", ttl)
	}
	// And forgetting it by the old id forgets the moved one.
	if err := ForgetPushSubscription(ctx, rdb, annOld); err != nil {
		t.Fatal(err)
	}
	if _, err := Unsubscribe(ctx, rdb, "ann", "https://push.example.com/ann"); !errors.Is(err, jobs.ErrUnknownSubscription) {
		t.Fatalf("forgotten by the old id, still there: %v", err)
	}
	// Mallory is at her bound.
	if _, err := Subscribe(ctx, rdb, browserSubscription(t, "https://push.example.com/m-new"), "mallory", public); !errors.Is(err, jobs.ErrTooManySubscriptions) {
		t.Fatalf("mallory past her bound after the move: %v", err)
	}
}
