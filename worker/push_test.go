package worker

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	webpush "github.com/SherClockHolmes/webpush-go"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/netguard"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

const testSubscriber = "mailto:ops@example.com"

// browser is what a browser keeps for one push subscription: its P-256
// key and its authentication secret.
type browser struct {
	key  *ecdh.PrivateKey
	auth []byte
	sub  jobs.PushSubscription
}

func newBrowser(t *testing.T, endpoint string) *browser {
	t.Helper()
	pb := pushtest.NewBrowser(t)
	return &browser{key: pb.Key, auth: pb.Secret,
		sub: jobs.PushSubscription{Endpoint: endpoint, Keys: jobs.SubscriptionKeys{P256dh: pb.P256dh, Auth: pb.Auth}}}
}

// decrypt opens an aes128gcm Web Push message (RFC 8291 over RFC 8188):
// the header carries the salt, the record size and the sender's
// ephemeral public key; ECDH with it and HKDF with the auth secret give
// the content key and nonce of the one record, whose plaintext ends in
// the last-record delimiter 0x02 and zero padding.
func (b *browser) decrypt(body []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("no aes128gcm header")
	}
	salt, rs, idlen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if len(body) < 21+idlen {
		return nil, errors.New("short key id")
	}
	senderPub, record := body[21:21+idlen], body[21+idlen:]
	if uint32(len(record)) > rs {
		return nil, fmt.Errorf("%d bytes of records with record size %d: Web Push sends one record", len(record), rs)
	}
	sender, err := ecdh.P256().NewPublicKey(senderPub)
	if err != nil {
		return nil, fmt.Errorf("sender key: %w", err)
	}
	secret, err := b.key.ECDH(sender)
	if err != nil {
		return nil, err
	}
	info := "WebPush: info\x00" + string(b.key.PublicKey().Bytes()) + string(senderPub)
	ikm, err := hkdf.Key(sha256.New, secret, b.auth, info, 32)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, record, nil) // record 0: the nonce as derived
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	end := len(plain) - 1
	for end >= 0 && plain[end] == 0 {
		end--
	}
	if end < 0 || plain[end] != 2 {
		return nil, errors.New("no last-record delimiter")
	}
	return plain[:end], nil
}

// checkVAPID verifies an Authorization header "vapid t=<jwt>, k=<key>"
// (RFC 8292): the JWT is ES256-signed by k, for the endpoint's origin,
// not expired nor valid for over 24 h, and names the subscriber. It
// returns k.
func checkVAPID(header, origin string) (string, error) {
	rest, ok := strings.CutPrefix(header, "vapid ")
	if !ok {
		return "", fmt.Errorf("authorization %q is not vapid", header)
	}
	var tok, k string
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(part, "t="); ok {
			tok = v
		} else if v, ok := strings.CutPrefix(part, "k="); ok {
			k = v
		}
	}
	raw, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil {
		return "", fmt.Errorf("k: %w", err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return "", fmt.Errorf("k: %w", err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("t %q is not a JWT", tok)
	}
	var head struct{ Alg, Typ string }
	var claims struct {
		Aud, Sub string
		Exp      int64
	}
	for i, v := range []any{&head, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(b, v); err != nil {
			return "", err
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return "", fmt.Errorf("signature of %d bytes (%v)", len(sig), err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return "", errors.New("JWT signature does not verify with k")
	}
	exp := time.Unix(claims.Exp, 0)
	switch {
	case head.Alg != "ES256":
		return "", fmt.Errorf("alg %q", head.Alg)
	case claims.Aud != origin:
		return "", fmt.Errorf("aud %q, want %q", claims.Aud, origin)
	case claims.Sub != testSubscriber:
		return "", fmt.Errorf("sub %q, want %q", claims.Sub, testSubscriber)
	case !exp.After(time.Now()) || exp.After(time.Now().Add(24*time.Hour)):
		return "", fmt.Errorf("exp %v", exp)
	}
	return k, nil
}

// pushService stands in for a browser vendor's push service on loopback:
// it checks each message's VAPID signature, decrypts it with the
// browser's keys and keeps the plaintext; answer picks the status, raw
// (when it gives one) the whole HTTP response, written as it is.
type pushService struct {
	t      *testing.T
	srv    *httptest.Server
	answer func(path string, attempt int) int
	raw    func(path string, attempt int) string
	conns  atomic.Int32 // connections accepted

	mu       sync.Mutex
	browsers map[string]*browser // by path
	attempts map[string]int
	got      map[string][][]byte // accepted plaintexts by path
	strays   int                 // requests for no subscription
	keys     map[string]bool     // VAPID public keys seen
	headers  http.Header         // of the last message
	body     []byte              // the last message
}

func newPushService(t *testing.T, answer func(path string, attempt int) int) *pushService {
	ps := &pushService{t: t, answer: answer, browsers: map[string]*browser{}, attempts: map[string]int{},
		got: map[string][][]byte{}, keys: map[string]bool{}}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(ps.serve))
	ps.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ps.conns.Add(1)
		}
	}
	ps.srv.Start()
	t.Cleanup(ps.srv.Close)
	return ps
}

// allowPrivate is how the tests subscribe the loopback push service:
// with private addresses allowed, as --push-allow-private does.
var allowPrivate = jobs.SubscribeOptions{Policy: netguard.Policy{AllowPrivate: true}}

// subscribe makes a browser subscribed at path, as the API would with
// private addresses allowed.
func (ps *pushService) subscribe(t *testing.T, b *bundle, path string) *browser {
	t.Helper()
	return ps.subscribeAt(t, b, ps.srv.URL+path)
}

// subscribeAt subscribes a browser whose endpoint is url; its path is the
// service's.
func (ps *pushService) subscribeAt(t *testing.T, b *bundle, endpoint string) *browser {
	t.Helper()
	br := newBrowser(t, endpoint)
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	ps.browsers[u.Path] = br
	ps.mu.Unlock()
	if _, err := jobsdb.Subscribe(t.Context(), b.rdb, br.sub, "tester", allowPrivate); err != nil {
		t.Fatal(err)
	}
	return br
}

// pushSink is the sink of the tests' subscription of endpoint.
func pushSink(endpoint string) string {
	return jobs.PushSink(jobs.PushSubscriptionID("tester", endpoint))
}

// requests is how many requests the service got, whatever they were.
func (ps *pushService) requests() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := 0
	for _, a := range ps.attempts {
		n += a
	}
	return n + ps.strays
}

func (ps *pushService) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	br := ps.browsers[req.URL.Path]
	if br == nil || req.Method != http.MethodPost {
		ps.strays++
		ps.t.Errorf("%s %s: no such subscription", req.Method, req.URL.Path)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	k, err := checkVAPID(req.Header.Get("Authorization"), ps.srv.URL)
	if err != nil {
		ps.t.Errorf("%s: VAPID: %v", req.URL.Path, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	ps.keys[k] = true
	if req.Header.Get("Content-Encoding") != "aes128gcm" {
		ps.t.Errorf("%s: Content-Encoding %q", req.URL.Path, req.Header.Get("Content-Encoding"))
	}
	plain, err := br.decrypt(body)
	if err != nil {
		ps.t.Errorf("%s: %v", req.URL.Path, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ps.headers, ps.body = req.Header.Clone(), body
	ps.attempts[req.URL.Path]++
	code := http.StatusCreated
	if ps.answer != nil {
		code = ps.answer(req.URL.Path, ps.attempts[req.URL.Path])
	}
	if code/100 == 2 {
		ps.got[req.URL.Path] = append(ps.got[req.URL.Path], plain)
	}
	if ps.raw != nil {
		if raw := ps.raw(req.URL.Path, ps.attempts[req.URL.Path]); raw != "" {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				ps.t.Error(err)
				return
			}
			_, _ = buf.WriteString(raw)
			_ = buf.Flush()
			conn.Close()
			return
		}
	}
	w.WriteHeader(code)
}

func (ps *pushService) received(path string) [][]byte {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return slices.Clone(ps.got[path])
}

// rawHook is a webhook receiver keeping the bodies it was sent.
type rawHook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newRawHook(t *testing.T) *rawHook {
	h := &rawHook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		h.mu.Lock()
		h.bodies = append(h.bodies, body)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *rawHook) received() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.bodies)
}

// waitUntil waits until cond holds, with a deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testsignal.WaitFor(t, what, cond)
}

// failVerify makes every verify fail for good, so enqueuing one raises a
// real failure notification.
func failVerify(w *Worker) {
	w.handlers[jobs.KindVerify] = func(context.Context, Handle, jobs.Payload) (outcome, error) {
		return outcome{}, fmt.Errorf("%w: verify broke", errPermanentTest)
	}
}

// notifyJob finds the notify job that delivered (or tried) to sink.
func (b *bundle) notifyJob(t *testing.T, sink string) (jobs.Record, bool) {
	t.Helper()
	evs, err := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 100000, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type != jobs.EventJobEnqueued || e.Kind != jobs.KindNotify {
			continue
		}
		r, err := b.client.Get(t.Context(), e.JobID)
		if err != nil {
			t.Fatal(err)
		}
		var res struct{ Sink string }
		_ = json.Unmarshal(r.Result, &res)
		if res.Sink == sink || len(r.Errors) > 0 && strings.Contains(r.Errors[0].Error, sink+":") {
			return r, true
		}
	}
	return jobs.Record{}, false
}

// A subscribed browser gets exactly the bytes a webhook gets, encrypted
// for it and signed with the deployment's VAPID key.
func TestPushDelivery(t *testing.T) {
	hook := newRawHook(t)
	ps := newPushService(t, nil)
	b := setupWith(t, options{worker: func(c *Config) {
		c.Webhooks = []Webhook{{URL: hook.srv.URL + "/hook", Secret: "s"}}
		c.Push.Subscriber = testSubscriber
		c.Push.AllowPrivate = true
	}}, failVerify, "orders")
	ps.subscribe(t, b, "/push/browser-1")

	v := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, v.ID, jobs.StateFailed)
	waitUntil(t, "the webhook and the browser get the notification", func() bool {
		return len(hook.received()) == 1 && len(ps.received("/push/browser-1")) == 1
	})
	webhook, pushed := hook.received()[0], ps.received("/push/browser-1")[0]
	if !bytes.Equal(pushed, webhook) {
		t.Fatalf("pushed %s\nwebhook got %s", pushed, webhook)
	}
	n, err := jobs.DecodeNotification(pushed)
	if err != nil || n.Type != jobs.EventJobFailed || n.JobID != v.ID || !strings.Contains(n.Error, "verify broke") {
		t.Fatalf("notification %+v, %v", n, err)
	}
	keys, err := jobsdb.VAPID(t.Context(), b.rdb)
	if err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	signers, h, msg := ps.keys, ps.headers, ps.body
	ps.mu.Unlock()
	if len(signers) != 1 || !signers[keys.Public] {
		t.Fatalf("signed with %v, want the deployment's key %s", signers, keys.Public)
	}
	if h.Get("TTL") != strconv.Itoa(24*3600) || h.Get("Urgency") != "high" {
		t.Fatalf("TTL %q, Urgency %q", h.Get("TTL"), h.Get("Urgency"))
	}
	// The checks are not vacuous: another origin or another browser fails.
	if _, err := checkVAPID(h.Get("Authorization"), "https://push.example.com"); err == nil {
		t.Fatal("the VAPID check accepted another audience")
	}
	if _, err := newBrowser(t, "").decrypt(msg); err == nil {
		t.Fatal("another browser decrypted the message")
	}
	sink := pushSink(ps.srv.URL + "/push/browser-1")
	rec, ok := b.notifyJob(t, sink)
	if !ok || rec.State != jobs.StateSucceeded || rec.Attempts != 1 {
		t.Fatalf("notify job for %s: %+v", sink, rec)
	}
}

// What push services answer: 404 and 410 forget the subscription and
// succeed; 5xx is retried; another 4xx fails the job for good, which is
// counted and never notified.
func TestPushAnswers(t *testing.T) {
	ps := newPushService(t, func(path string, attempt int) int {
		switch path {
		case "/gone":
			return http.StatusGone
		case "/missing":
			return http.StatusNotFound
		case "/flaky":
			if attempt == 1 {
				return http.StatusServiceUnavailable
			}
		case "/refused":
			return http.StatusBadRequest
		}
		return http.StatusCreated
	})
	hook := newRawHook(t)
	b := setupWith(t, options{worker: func(c *Config) {
		c.Webhooks = []Webhook{{URL: hook.srv.URL + "/hook", Secret: "s"}}
		c.Push.Subscriber = testSubscriber
		c.Push.AllowPrivate = true
	}}, failVerify, "orders")
	for _, p := range []string{"/gone", "/missing", "/flaky", "/refused"} {
		ps.subscribe(t, b, p)
	}
	sink := func(path string) string { return pushSink(ps.srv.URL + path) }

	v := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, v.ID, jobs.StateFailed)
	waitUntil(t, "every push job finishes", func() bool {
		for _, p := range []string{"/gone", "/missing", "/flaky", "/refused"} {
			r, ok := b.notifyJob(t, sink(p))
			if !ok || r.State != jobs.StateSucceeded && r.State != jobs.StateFailed {
				return false
			}
		}
		return true
	})
	for _, p := range []string{"/gone", "/missing"} {
		r, _ := b.notifyJob(t, sink(p))
		if r.State != jobs.StateSucceeded || r.Attempts != 1 || !strings.Contains(r.Reason, "subscription gone") {
			t.Errorf("%s: %+v", p, r)
		}
		if _, err := jobsdb.PushSubscriptionByID(t.Context(), b.rdb, jobs.PushSubscriptionID("tester", ps.srv.URL+p)); !errors.Is(err, jobs.ErrUnknownSubscription) {
			t.Errorf("%s: subscription kept: %v", p, err)
		}
	}
	if r, _ := b.notifyJob(t, sink("/flaky")); r.State != jobs.StateSucceeded || r.Attempts != 2 || len(ps.received("/flaky")) != 1 {
		t.Errorf("flaky: %+v, received %d", r, len(ps.received("/flaky")))
	}
	r, _ := b.notifyJob(t, sink("/refused"))
	if r.State != jobs.StateFailed || r.Attempts != 1 || !strings.Contains(r.Errors[0].Error, "400 Bad Request") {
		t.Errorf("refused: %+v", r)
	}
	if _, err := jobsdb.PushSubscriptionByID(t.Context(), b.rdb, jobs.PushSubscriptionID("tester", ps.srv.URL+"/refused")); err != nil {
		t.Errorf("a refused message forgot the subscription: %v", err)
	}
	waitUntil(t, "the failed notify job is counted", func() bool {
		n, _ := b.rdb.Get(t.Context(), keyspace.NotifyFailedKey).Int()
		return n == 1
	})
	// Nothing notifies the failed notify job: once the outbox is empty,
	// the one verify failure went to the five sinks, and nothing more.
	waitUntil(t, "the webhook gets the verify failure", func() bool { return len(hook.received()) == 1 })
	waitUntil(t, "the outbox drains", func() bool {
		n1, _ := b.rdb.LLen(t.Context(), keyspace.OutboxKey).Result()
		n2, _ := b.rdb.LLen(t.Context(), keyspace.OutboxProcessingKey("n1")).Result()
		return n1 == 0 && n2 == 0
	})
	evs, err := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 100000, 0)
	if err != nil {
		t.Fatal(err)
	}
	notifyJobs := 0
	for _, e := range evs {
		if e.Type == jobs.EventJobEnqueued && e.Kind == jobs.KindNotify {
			notifyJobs++
		}
	}
	if notifyJobs != 5 || len(hook.received()) != 1 {
		t.Fatalf("%d notify jobs (want one per sink: 5), webhook got %d", notifyJobs, len(hook.received()))
	}
}

// webpush-go's keys and ours are the same encoding.
func TestVAPIDKeyFormat(t *testing.T) {
	priv, pub, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := (jobs.VAPIDKeys{Public: pub, Private: priv}).Validate(); err != nil {
		t.Fatalf("webpush-go's keys: %v", err)
	}
}

// A subscription removed between the notification and its job: the job
// succeeds and says so.
func TestPushUnsubscribedBeforeDelivery(t *testing.T) {
	b := setup(t, nil)
	n := jobs.Notification{ID: "n1", Type: jobs.EventJobFailed, Summary: "x", At: time.Now().UTC()}
	body, _ := json.Marshal(n)
	out, err := b.w.deliver(t.Context(), jobs.Payload{JobID: jobs.NewID(), Kind: jobs.KindNotify, Trigger: jobs.TriggerAuto,
		Actor: jobs.ActorSystem, Sink: pushSink("https://push.example.com/gone"), Notification: body})
	if err != nil || out.Status != jobs.StatusDelivered || !strings.Contains(out.Reason, "unsubscribed") {
		t.Fatalf("outcome %+v, %v", out, err)
	}
}

// A notification too long for one push message has its free text
// shortened; anything that fits goes as it is.
func TestFitPush(t *testing.T) {
	n := jobs.Notification{ID: "n1", Type: jobs.EventJobFailed, Store: "orders", At: time.Now().UTC(),
		Error: strings.Repeat("é", 3000), Summary: "compact of store orders failed: " + strings.Repeat("ü", 3000)}
	body, _ := json.Marshal(n)
	msg, short, err := fitPush(n, body)
	if err != nil || !short || len(msg) > maxPushMessage {
		t.Fatalf("%d bytes, shortened %v, %v", len(msg), short, err)
	}
	var got jobs.Notification
	if err := json.Unmarshal(msg, &got); err != nil || got.ID != n.ID || got.Store != "orders" || len(msg) < maxPushMessage-8 ||
		!strings.HasSuffix(got.Error, "é…") || !strings.HasPrefix(got.Summary, "compact of store orders failed: ü") || !strings.HasSuffix(got.Summary, "…") {
		t.Fatalf("shortened to %+v, %v", got, err)
	}
	small, _ := json.Marshal(jobs.Notification{ID: "n2", Type: jobs.EventJobFailed, Summary: "short"})
	if msg, short, err := fitPush(jobs.Notification{}, small); err != nil || short || !bytes.Equal(msg, small) {
		t.Fatalf("a small notification changed: %s %v %v", msg, short, err)
	}
	// maxPushMessage is what webpush-go takes: one byte more it refuses.
	br := newBrowser(t, "http://127.0.0.1:9/x")
	keys, _ := jobs.GenerateVAPIDKeys()
	send := func(size int) error {
		_, err := webpush.SendNotification(make([]byte, size), &webpush.Subscription{Endpoint: br.sub.Endpoint,
			Keys: webpush.Keys{P256dh: br.sub.Keys.P256dh, Auth: br.sub.Keys.Auth}},
			&webpush.Options{HTTPClient: refuseAll{}, Subscriber: "ops@example.com", VAPIDPublicKey: keys.Public, VAPIDPrivateKey: keys.Private})
		return err
	}
	if err := send(maxPushMessage); !errors.Is(err, errRefused) {
		t.Fatalf("%d bytes: %v", maxPushMessage, err)
	}
	if err := send(maxPushMessage + 1); !errors.Is(err, webpush.ErrMaxPadExceeded) {
		t.Fatalf("%d bytes: %v", maxPushMessage+1, err)
	}
}

var errRefused = errors.New("not sent")

// refuseAll is an HTTP client that sends nothing.
type refuseAll struct{}

func (refuseAll) Do(*http.Request) (*http.Response, error) { return nil, errRefused }

// stubResolver resolves from a table; nothing here asks a real resolver.
type stubResolver map[string][]netip.Addr

func (r stubResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a := r[host]; len(a) > 0 {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// failedNotify waits for the notify job of sink to fail for good.
func (b *bundle) failedNotify(t *testing.T, sink string) jobs.Record {
	t.Helper()
	var r jobs.Record
	waitUntil(t, "the notify job of "+sink+" fails", func() bool {
		var ok bool
		r, ok = b.notifyJob(t, sink)
		return ok && r.State == jobs.StateFailed
	})
	return r
}

// The SSRF regression: subscriptions stored while private addresses were
// allowed (or before the check existed) to http://127.0.0.1:<port> and to
// a name that resolves to loopback when the worker connects are never
// sent to once private addresses are not allowed: the push service gets
// no connection, each notify job fails for good saying so in fixed words
// (no address), and each subscription is forgotten. The webhook, which
// the operator configured, still gets the notification on loopback.
// (Today's code POSTs to 127.0.0.1 and the service gets the message.)
func TestPushRefusedAtDialTime(t *testing.T) {
	hook := newRawHook(t)
	ps := newPushService(t, nil)
	port := ps.srv.Listener.Addr().(*net.TCPAddr).Port
	resolver := stubResolver{"rebind.example": {netip.MustParseAddr("127.0.0.1")}}
	b := setupWith(t, options{worker: func(c *Config) {
		c.Webhooks = []Webhook{{URL: hook.srv.URL + "/hook", Secret: "s"}}
		c.Push.Subscriber = testSubscriber
		c.Push.Resolver = resolver // and AllowPrivate left off, the default
	}}, failVerify, "orders")
	literal := ps.srv.URL + "/stored-before" // http://127.0.0.1:<port>/…
	literalTLS := fmt.Sprintf("https://127.0.0.1:%d/tls", port)
	rebound := fmt.Sprintf("https://rebind.example:%d/rebound", port)
	for _, e := range []string{literal, literalTLS, rebound} {
		ps.subscribeAt(t, b, e)
	}

	v := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, v.ID, jobs.StateFailed)
	waitUntil(t, "the webhook gets the notification", func() bool { return len(hook.received()) == 1 })
	for endpoint, why := range map[string]string{
		literal:    "the URL must be https",
		literalTLS: "address 127.0.0.1 is not public", // as the subscriber gave it
		// What the name resolved to is not said; the dialer refused it.
		rebound: "the push service's address is not public (checked as the connection was made)",
	} {
		r := b.failedNotify(t, pushSink(endpoint))
		if r.Attempts != 1 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error, "endpoint refused, nothing sent: "+why+"; subscription forgotten") {
			t.Errorf("%s: %+v", endpoint, r)
		}
		if endpoint == rebound && strings.Contains(r.Errors[0].Error, "127.0.0.1") {
			t.Errorf("%s: the record names the address the host resolved to: %s", endpoint, r.Errors[0].Error)
		}
		if _, err := jobsdb.PushSubscriptionByID(t.Context(), b.rdb, jobs.PushSubscriptionID("tester", endpoint)); !errors.Is(err, jobs.ErrUnknownSubscription) {
			t.Errorf("%s: subscription kept: %v", endpoint, err)
		}
	}
	if n, c := ps.requests(), ps.conns.Load(); n != 0 || c != 0 {
		t.Fatalf("the push service got %d requests on %d connections", n, c)
	}
}

// What a push service answers reaches the job record as its status code
// and the standard phrase for it: never its body nor the reason phrase it
// sent (a viewer chose the URL; records and history are every viewer's).
func TestPushRecordsStatusOnly(t *testing.T) {
	const secret = "SECRET-from-the-endpoint"
	raw := func(status, phrase string) string {
		body := "-ERR " + secret + " +OK redis_version:7.0.15\r\n"
		return fmt.Sprintf("HTTP/1.1 %s %s-%s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, phrase, secret, len(body), body)
	}
	ps := newPushService(t, func(path string, attempt int) int {
		switch {
		case path == "/refused":
			return http.StatusBadRequest
		case path == "/flaky" && attempt == 1:
			return http.StatusServiceUnavailable
		case path == "/odd":
			return 499
		}
		return http.StatusCreated
	})
	ps.raw = func(path string, attempt int) string {
		switch {
		case path == "/refused":
			return raw("400", "Nope")
		case path == "/flaky" && attempt == 1:
			return raw("503", "Busy")
		case path == "/odd":
			return raw("499", "Odd")
		}
		return raw("201", "Made")
	}
	b := setupWith(t, options{worker: func(c *Config) {
		c.Push.Subscriber = testSubscriber
		c.Push.AllowPrivate = true
	}}, failVerify, "orders")
	for _, p := range []string{"/refused", "/flaky", "/odd", "/fine"} {
		ps.subscribe(t, b, p)
	}
	v := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, v.ID, jobs.StateFailed)
	want := map[string]struct {
		state  jobs.State
		errors []string
	}{
		"/refused": {jobs.StateFailed, []string{"push service refused it: 400 Bad Request"}},
		"/flaky":   {jobs.StateSucceeded, []string{"push service answered 503 Service Unavailable"}},
		"/odd":     {jobs.StateFailed, []string{"push service refused it: 499"}},
		"/fine":    {jobs.StateSucceeded, nil},
	}
	for p, w := range want {
		var r jobs.Record
		waitUntil(t, p+" finishes", func() bool {
			var ok bool
			r, ok = b.notifyJob(t, pushSink(ps.srv.URL+p))
			return ok && r.State == w.state
		})
		var got []string
		for _, e := range r.Errors {
			got = append(got, e.Error)
		}
		if len(got) != len(w.errors) {
			t.Errorf("%s: errors %q, want %q", p, got, w.errors)
			continue
		}
		for i := range got {
			if !strings.HasSuffix(got[i], w.errors[i]) {
				t.Errorf("%s: error %q, want it to end %q", p, got[i], w.errors[i])
			}
		}
	}
	// Nowhere: not in any record, not in the history or events.
	evs, err := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 100000, 0)
	if err != nil {
		t.Fatal(err)
	}
	dump, _ := json.Marshal(evs)
	for p := range want {
		r, _ := b.notifyJob(t, pushSink(ps.srv.URL+p))
		j, _ := json.Marshal(r)
		dump = append(dump, j...)
	}
	if strings.Contains(string(dump), "SECRET") || strings.Contains(string(dump), "redis_version") {
		t.Fatalf("the push service's words reached the records: %s", dump)
	}
}

// A push service's redirect is its answer, final, and is not followed:
// the redirect's target gets nothing.
func TestPushFollowsNoRedirect(t *testing.T) {
	var hits atomic.Int32
	inside := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(inside.Close)
	ps := newPushService(t, func(string, int) int { return http.StatusTemporaryRedirect })
	ps.raw = func(string, int) string {
		return "HTTP/1.1 307 Temporary Redirect\r\nLocation: " + inside.URL + "/admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	}
	b := setupWith(t, options{worker: func(c *Config) {
		c.Push.Subscriber = testSubscriber
		c.Push.AllowPrivate = true
	}}, failVerify, "orders")
	ps.subscribe(t, b, "/moved")
	v := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, v.ID, jobs.StateFailed)
	r := b.failedNotify(t, pushSink(ps.srv.URL+"/moved"))
	if r.Attempts != 1 || !strings.HasSuffix(r.Errors[0].Error, "push service refused it: 307 Temporary Redirect") {
		t.Fatalf("%+v", r)
	}
	if hits.Load() != 0 {
		t.Fatalf("the redirect was followed: %d requests", hits.Load())
	}
}
