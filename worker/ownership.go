package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

func randFloat() float64 { return mrand.Float64() }

// newInstance names one process start in its leases.
func newInstance() string {
	var b [6]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ErrStoreOwned: another live node holds a store's lease.
var ErrStoreOwned = errors.New("store owned by another node")

// claimScript takes a store's lease when it is free, or held by the same
// node on the same host (a restart after a crash: the data dir's instance
// lock, held by now, proves the old process is gone).
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local l = cjson.decode(cur)
  if l.node ~= ARGV[2] or l.host ~= ARGV[3] then return cur end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[2])
return ''
`)

// renewScript extends a lease only while it is still ours.
var renewScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

func (w *Worker) claim(ctx context.Context) error {
	for _, name := range w.cfg.Registry.Names() {
		held, err := claimScript.Run(ctx, w.rdb, []string{jobs.LeaseKey(name), jobs.StoresKey},
			w.lease.Encode(), w.lease.Node, w.lease.Host, w.cfg.LeaseTTL.Milliseconds(), name).Text()
		if err != nil {
			return fmt.Errorf("worker: claim store %s: %w", name, err)
		}
		if held != "" {
			other, _ := jobs.DecodeLease(held)
			return fmt.Errorf("%w: store %s is held by node %s on host %s (instance %s); this is node %s on host %s",
				ErrStoreOwned, name, other.Node, other.Host, other.Instance, w.lease.Node, w.lease.Host)
		}
	}
	return nil
}

// heartbeat renews the leases and publishes every store's stats until ctx
// ends.
func (w *Worker) heartbeat(ctx context.Context) {
	t := time.NewTicker(w.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		w.renew(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) renew(ctx context.Context) {
	w.node.At = time.Now().UTC()
	if err := jobs.NodeBeat(ctx, w.rdb, w.node, w.cfg.LeaseTTL); err != nil {
		w.log.Warn("node heartbeat failed", "err", err)
	}
	if down, err := jobs.CheckNodes(ctx, w.rdb, w.cfg.Jobs.EventsMaxLen); err != nil {
		w.log.Warn("checking other nodes failed", "err", err)
	} else if len(down) > 0 {
		w.log.Warn("nodes down: their heartbeats expired", "nodes", down)
	}
	for _, name := range w.cfg.Registry.Names() {
		ok, err := renewScript.Run(ctx, w.rdb, []string{jobs.LeaseKey(name)}, w.lease.Encode(), w.cfg.LeaseTTL.Milliseconds()).Int()
		if err != nil {
			w.log.Warn("lease renewal failed", "store", name, "err", err)
			continue
		}
		if ok == 0 {
			// Expired (Redis was away longer than the TTL): take it back
			// unless another node has it.
			if err := w.claim(ctx); err != nil {
				w.log.Error("lost a store lease", "store", name, "err", err)
			}
		}
		if err := w.publishStats(ctx, w.rdb, name); err != nil {
			w.log.Warn("publishing stats failed", "store", name, "err", err)
		}
	}
}

// statsJSON is what the API reads about a store.
func (w *Worker) statsJSON(name string) (string, error) {
	s, err := w.cfg.Registry.Store(name)
	if err != nil {
		return "", err
	}
	v := struct {
		Node    string    `json:"node"`
		Stats   any       `json:"stats"`
		Backups any       `json:"backups,omitempty"`
		At      time.Time `json:"at"`
	}{Node: w.cfg.Node, Stats: s.Stats(), At: time.Now().UTC()}
	if bs, err := s.Backups(); err == nil {
		v.Backups = bs
	}
	b, err := json.Marshal(v)
	return string(b), err
}

func (w *Worker) publishStats(ctx context.Context, c redis.Cmdable, name string) error {
	js, err := w.statsJSON(name)
	if err != nil {
		return err
	}
	return c.Set(ctx, jobs.StatsKey(name), js, 0).Err()
}

func hostname() string { h, _ := os.Hostname(); return h }
