package api

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// snapshot is a value read from Redis that an API process's requests
// share instead of each reading it: at 1,000 nodes, every node's
// heartbeat (with its store list) is over a megabyte, and every store's
// owner a hundred thousand hash fields.
//
// The first request reads it. Later ones get the copy while it is younger
// than its age limit; the first one to find it older starts one refresh in
// the background and, like those after it, gets the older copy meanwhile,
// so no request waits behind a refresh. A copy older than three times the
// limit (nobody asked for a while) is read again before answering. The
// limit is maxAge, or ten times what the last read took when that is
// longer, so a big deployment's reads cost Redis a bounded share of its
// time.
type snapshot[T any] struct {
	maxAge time.Duration
	read   func(context.Context) (T, error)
	clock  clockwork.Clock
	base   context.Context // a background refresh's; its end stops them (Server.Stop)
	wg     sync.WaitGroup  // background refreshes running

	mu         sync.Mutex
	val        T
	ok         bool
	at         time.Time
	cost       time.Duration
	refreshing bool
	inline     sync.Mutex // one inline read at a time
}

func (c *snapshot[T]) limit() time.Duration { return max(c.maxAge, 10*c.cost) }

func (c *snapshot[T]) get(ctx context.Context) (T, error) {
	c.mu.Lock()
	if c.ok && c.clock.Since(c.at) < 3*c.limit() {
		v := c.val
		if !c.refreshing && c.base.Err() == nil && c.clock.Since(c.at) >= c.limit() {
			c.refreshing = true
			c.wg.Go(c.refresh)
		}
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()

	c.inline.Lock()
	defer c.inline.Unlock()
	c.mu.Lock()
	if c.ok && c.clock.Since(c.at) < c.limit() { // read by the request before this one
		v := c.val
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()
	return c.load(ctx)
}

// stop waits for a background refresh to end; base must have ended.
func (c *snapshot[T]) stop() { c.wg.Wait() }

func (c *snapshot[T]) refresh() {
	ctx, cancel := context.WithTimeout(c.base, time.Minute)
	defer cancel()
	_, _ = c.load(ctx)
	c.mu.Lock()
	c.refreshing = false
	c.mu.Unlock()
}

// load reads the value and keeps it; a failed read keeps the old copy.
func (c *snapshot[T]) load(ctx context.Context) (T, error) {
	t0 := c.clock.Now()
	v, err := c.read(ctx)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	c.val, c.ok, c.at, c.cost = v, true, c.clock.Now(), c.clock.Since(t0)
	c.mu.Unlock()
	return v, nil
}
