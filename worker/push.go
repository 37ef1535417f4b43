package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	webpush "github.com/SherClockHolmes/webpush-go"
	"github.com/hibiken/asynq"

	"storekeeper/internal/netguard"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// Web Push delivery. Browsers subscribed through the API are sinks like
// the configured webhooks (jobs.PushSink): the dispatcher gives each its
// own notify job, and the job sends the same JSON a webhook gets,
// encrypted for the browser (RFC 8291, aes128gcm) and signed with the
// deployment's VAPID keys (RFC 8292), both kept in Redis.
//
// An endpoint is a URL a viewer gave, so push has an HTTP client of its
// own (webhooks, which the operator configures, use Config.HTTPClient):
// every connection it makes goes through netguard's dialer, which refuses
// any address that is not public (unless AllowPrivate), it uses no proxy
// and follows no redirect. What a push service answers is recorded as its
// status code and the standard phrase for it, never its body nor its own
// reason phrase: job records and history are readable by every viewer.

// PushConfig configures Web Push delivery; the keys and the subscriptions
// are in Redis.
type PushConfig struct {
	// Subscriber is the VAPID contact push services may use about this
	// sender: "mailto:<address>" or an https URL (default
	// "mailto:storekeeper@localhost"; set a real one).
	Subscriber string
	// TTL is how long a push service keeps a message for a browser that
	// is offline (default 24 h; whole seconds).
	TTL time.Duration
	// AllowPrivate lets pushes go over http and to any address: loopback,
	// private, link-local (tests, a push service inside the network).
	// Off, every connection to a push service must be to a public
	// address, checked as it is made. The API has the same switch for
	// subscribing; set both alike.
	AllowPrivate bool
	// Resolver resolves push services' hosts (default
	// net.DefaultResolver); tests stub it.
	Resolver netguard.Resolver

	client *http.Client // netguard's, made by withDefaults
}

// policy is where pushes may go.
func (c PushConfig) policy() netguard.Policy {
	return netguard.Policy{AllowPrivate: c.AllowPrivate, Resolver: c.Resolver}
}

// Validate reports whether the configuration is usable, defaults applied.
func (c PushConfig) Validate() error { return c.withDefaults() }

func (c *PushConfig) withDefaults() error {
	if c.Subscriber == "" {
		c.Subscriber = "mailto:storekeeper@localhost"
	}
	addr, mailto := strings.CutPrefix(c.Subscriber, "mailto:")
	if mailto && !strings.Contains(addr, "@") || !mailto && !strings.HasPrefix(c.Subscriber, "https://") {
		return fmt.Errorf("push subscriber %q is neither mailto:<address> nor an https URL", c.Subscriber)
	}
	if c.TTL == 0 {
		c.TTL = 24 * time.Hour
	}
	if c.TTL < time.Second {
		return errors.New("push TTL must be at least 1s")
	}
	if c.client == nil {
		c.client = c.policy().Client()
	}
	return nil
}

// vapidSubscriber is the subscriber as webpush-go wants it: it prefixes
// anything but an https URL with "mailto:" itself.
func (c PushConfig) vapidSubscriber() string { return strings.TrimPrefix(c.Subscriber, "mailto:") }

// maxPushMessage is the longest plaintext webpush-go sends: one record of
// 4096 bytes (what every push service accepts) less the 16-byte tag, the
// 86-byte header and the padding delimiter.
const maxPushMessage = 4096 - 16 - 86 - 1

// deliverPush sends n (body, its JSON) to push subscription id. The push
// service's 2xx is a delivery; 404 and 410 mean the browser unsubscribed
// or the subscription expired: it is forgotten and the job succeeds;
// 408, 429, 5xx and no answer are retried; any other status is final.
// An endpoint the policy refuses (http, or an address that is not public
// when the connection is made) is never sent to: the subscription is
// forgotten and the job fails for good.
func (w *Worker) deliverPush(ctx context.Context, sink, id string, n jobs.Notification, body []byte) (outcome, error) {
	log := w.log.With("sink", sink, "notification", n.ID)
	result := map[string]any{"sink": sink, "notification": n.ID}
	sub, err := jobsdb.PushSubscriptionByID(ctx, w.rdb, id)
	if errors.Is(err, jobs.ErrUnknownSubscription) {
		log.Info("push subscription removed before delivery; nothing sent")
		return outcome{Status: jobs.StatusDelivered, Reason: "unsubscribed before delivery; nothing sent", Result: result}, nil
	}
	if err != nil {
		return outcome{}, err
	}
	log = log.With("subscription", sub.ID, "owner", sub.Owner)
	if _, err := w.cfg.Push.policy().CheckSyntax(sub.Endpoint); err != nil {
		return w.refusedPush(ctx, log, sink, sub, err)
	}
	keys, err := jobsdb.VAPID(ctx, w.rdb)
	if err != nil {
		return outcome{}, err
	}
	msg, shortened, err := fitPush(n, body)
	if err != nil {
		return outcome{}, fmt.Errorf("%w: push to %s: %w", asynq.SkipRetry, sink, err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.NotifyTimeout)
	defer cancel()
	resp, err := webpush.SendNotificationWithContext(ctx, msg,
		&webpush.Subscription{Endpoint: sub.Endpoint, Keys: webpush.Keys{P256dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}},
		&webpush.Options{HTTPClient: w.cfg.Push.client, Subscriber: w.cfg.Push.vapidSubscriber(), TTL: int(w.cfg.Push.TTL / time.Second),
			Urgency: webpush.UrgencyHigh, VAPIDPublicKey: keys.Public, VAPIDPrivateKey: keys.Private})
	if errors.Is(err, netguard.ErrRefused) {
		return w.refusedPush(ctx, log, sink, sub, err)
	}
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) { // no answer from the push service
			// Its host, not the whole endpoint (the path is the browser's),
			// nor the DNS server asked.
			var dnsErr *net.DNSError
			if errors.As(uerr.Err, &dnsErr) {
				dnsErr.Server = ""
			}
			return outcome{}, fmt.Errorf("push to %s: no answer from %s: %w", sink, endpointOrigin(sub.Endpoint), uerr.Err)
		}
		return outcome{}, fmt.Errorf("%w: push to %s: %w", asynq.SkipRetry, sink, err)
	}
	defer resp.Body.Close()
	// The body is read (so the connection can be reused) and dropped: a
	// viewer chose this URL, and whatever it answers must not reach the
	// job record.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	status := statusPhrase(resp.StatusCode)
	result["status"] = resp.StatusCode
	if shortened {
		result["shortened"] = true
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return outcome{Status: jobs.StatusDelivered, Result: result}, nil
	case c == http.StatusNotFound || c == http.StatusGone:
		err := jobsdb.ForgetPushSubscription(context.WithoutCancel(ctx), w.rdb, sub.ID)
		if err != nil && !errors.Is(err, jobs.ErrUnknownSubscription) {
			return outcome{}, fmt.Errorf("push to %s: forgetting the expired subscription: %w", sink, err)
		}
		log.Info("push service says the subscription is gone; forgot it", "status", c)
		return outcome{Status: jobs.StatusDelivered, Reason: "subscription gone (" + status + "); forgotten", Result: result}, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return outcome{}, fmt.Errorf("push to %s: push service answered %s", sink, status)
	default:
		return outcome{}, fmt.Errorf("%w: push to %s: push service refused it: %s", asynq.SkipRetry, sink, status)
	}
}

// refusedPush ends a push the address policy refused before anything was
// sent: the subscription is forgotten (it would be refused every time)
// and the job fails for good. The record says why in fixed words; the
// log (for operators) has the address.
func (w *Worker) refusedPush(ctx context.Context, log *slog.Logger, sink string, sub jobs.PushSubscriptionRecord, cause error) (outcome, error) {
	log.Warn("push endpoint refused by the address policy; nothing sent, subscription forgotten", "err", cause)
	forgotten := "; subscription forgotten"
	if err := jobsdb.ForgetPushSubscription(context.WithoutCancel(ctx), w.rdb, sub.ID); err != nil && !errors.Is(err, jobs.ErrUnknownSubscription) {
		forgotten = "; forgetting the subscription failed"
	}
	reason := "the push service's address is not public (checked as the connection was made)"
	if r, ok := netguard.Reason(cause); ok && !errors.Is(cause, netguard.ErrNotPublic) {
		reason = r // about the endpoint as given (http, an IP address, localhost), nothing resolved
	}
	return outcome{}, fmt.Errorf("%w: push to %s: endpoint refused, nothing sent: %s%s", asynq.SkipRetry, sink, reason, forgotten)
}

// statusPhrase is code and its standard phrase ("400 Bad Request"), never
// the reason phrase the server sent.
func statusPhrase(code int) string {
	if t := http.StatusText(code); t != "" {
		return strconv.Itoa(code) + " " + t
	}
	return strconv.Itoa(code)
}

// endpointOrigin is scheme://host of endpoint.
func endpointOrigin(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "the push service"
	}
	return u.Scheme + "://" + u.Host
}

// fitPush returns the message for n: body, the very bytes a webhook gets,
// unless it is over maxPushMessage; then the free text (error, summary)
// is clipped, as little as fits, and shortened is true.
func fitPush(n jobs.Notification, body []byte) (msg []byte, shortened bool, err error) {
	if len(body) <= maxPushMessage {
		return body, false, nil
	}
	clipped := func(limit int) []byte {
		m := n
		m.Error, m.Summary = clip(n.Error, limit), clip(n.Summary, limit)
		b, _ := json.Marshal(m)
		return b
	}
	if b := clipped(0); len(b) > maxPushMessage {
		return nil, false, fmt.Errorf("notification %s is %d bytes without its error and summary, over the %d one push message holds", n.ID, len(b), maxPushMessage)
	}
	// The longest limit on each field that fits: clipped(lo) fits, clipped(hi) does not.
	lo, hi := 0, max(len(n.Error), len(n.Summary))
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; len(clipped(mid)) <= maxPushMessage {
			lo = mid
		} else {
			hi = mid
		}
	}
	return clipped(lo), true, nil
}

// clip returns s when it has at most limit bytes, else as much of its
// start as fits in limit with an ellipsis (cut on a rune boundary).
func clip(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	keep := limit - len("…")
	if keep <= 0 {
		return ""
	}
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + "…"
}
