package worker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// Webhook is a notification sink: each notification is POSTed to URL as
// JSON, signed with Secret (see Sign).
type Webhook struct {
	URL    string
	Secret string
}

// Name identifies the sink in notify jobs (never the secret): stable for
// the same URL on every node.
func (h Webhook) Name() string {
	sum := sha256.Sum256([]byte(h.URL))
	return "webhook-" + hex.EncodeToString(sum[:4])
}

func (h Webhook) validate() error {
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", h.URL)
	}
	if h.Secret == "" {
		return fmt.Errorf("%s has no secret", h.URL)
	}
	return nil
}

// SignatureHeader carries a delivery's signature.
const SignatureHeader = "X-Storekeeper-Signature"

// Sign returns the signature header value for body sent at t:
// t=<unix seconds>,sha256=<hex HMAC-SHA256(secret, "<t>.<body>")>. The
// timestamp lets a receiver refuse replays.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (w *Worker) webhook(name string) (Webhook, bool) {
	for _, h := range w.cfg.Webhooks {
		if h.Name() == name {
			return h, true
		}
	}
	return Webhook{}, false
}

// deliver is the notify handler: one notification to one sink, a webhook
// or a browser subscribed to Web Push (deliverPush). A webhook receiver's
// 2xx is a delivery; 408, 429 and 5xx (and no answer) are retried with
// backoff; any other status is final.
func (w *Worker) deliver(ctx context.Context, p jobs.Payload) (outcome, error) {
	n, err := jobs.DecodeNotification(p.Notification)
	if err != nil {
		return outcome{}, fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	}
	body := []byte(p.Notification)
	if id, ok := jobs.PushSinkID(p.Sink); ok {
		return w.deliverPush(ctx, p.Sink, id, n, body)
	}
	h, ok := w.webhook(p.Sink)
	if !ok {
		return outcome{}, fmt.Errorf("%w: no sink %q on node %s (every node needs the same --webhook flags)", asynq.SkipRetry, p.Sink, w.cfg.Node)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return outcome{}, fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "storekeeper")
	req.Header.Set("X-Storekeeper-Notification", n.ID)
	req.Header.Set(SignatureHeader, Sign(h.Secret, time.Now(), body))
	resp, err := w.cfg.HTTPClient.Do(req)
	if err != nil {
		return outcome{}, fmt.Errorf("deliver to %s: %w", p.Sink, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return outcome{Status: jobs.StatusDelivered, Result: map[string]any{"sink": p.Sink, "notification": n.ID, "status": c}}, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return outcome{}, fmt.Errorf("deliver to %s: receiver answered %s", p.Sink, resp.Status)
	default:
		return outcome{}, fmt.Errorf("%w: deliver to %s: receiver refused it: %s", asynq.SkipRetry, p.Sink, resp.Status)
	}
}

// dispatchLoop hands outbox notifications to the notify queue, one job
// per sink (each webhook, each push subscription), until ctx ends. An
// entry moves to this node's processing list first and leaves it only
// once every sink has its job, so a crash or a Redis outage loses none; a
// delivery is enqueued once per sink even when an entry is dispatched
// twice.
func (w *Worker) dispatchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		// What this node was dispatching when it stopped or failed, oldest
		// first, else the outbox's next.
		v, ok, err := jobsdb.NextOutbox(ctx, w.rdb, w.cfg.Node, time.Second)
		if err == nil && !ok {
			continue
		}
		if err == nil {
			err = w.dispatch(ctx, v)
		}
		if err == nil {
			err = jobsdb.DoneOutbox(ctx, w.rdb, w.cfg.Node, v)
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn("dispatching notifications failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (w *Worker) dispatch(ctx context.Context, v string) error {
	n, err := jobs.DecodeNotification([]byte(v))
	if err != nil {
		w.log.Error("dropping a malformed notification", "err", err)
		return nil
	}
	if w.dispatched != nil {
		w.dispatched(n)
	}
	sinks, err := w.sinks(ctx)
	if err != nil {
		return err
	}
	if len(sinks) == 0 {
		w.log.Info("notification (no sinks configured)", "id", n.ID, "type", n.Type, "summary", n.Summary)
		return nil
	}
	for _, sink := range sinks {
		rec, made, err := w.jobs.EnqueueNotify(ctx, n, sink)
		if err != nil {
			return err
		}
		if made {
			w.log.Info("notification queued", "id", n.ID, "type", n.Type, "sink", sink, "job", rec.ID)
		}
	}
	return nil
}

// sinks names where a notification goes: every configured webhook and
// every browser subscribed to Web Push when it is dispatched.
func (w *Worker) sinks(ctx context.Context) ([]string, error) {
	ids, err := jobsdb.PushSubscriptionIDs(ctx, w.rdb)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(w.cfg.Webhooks)+len(ids))
	for _, h := range w.cfg.Webhooks {
		out = append(out, h.Name())
	}
	for _, id := range ids {
		out = append(out, jobs.PushSink(id))
	}
	return out, nil
}
