package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"storekeeper/internal/faultproxy"
)

// The node's own faults, which the harness drives over HTTP: its network
// to Redis and its clock. Both are test hooks of this test program; the
// storekeeper binary has neither.

// netFaults sits between the node and Redis: every connection the node's
// Redis client opens (to a Sentinel, to the primary) goes through a fault
// proxy of its own per address, so that the harness can cut, slow or
// reset this node's links alone while the other nodes keep theirs.
type netFaults struct {
	mu      sync.Mutex
	proxies map[string]*faultproxy.Proxy
	paused  bool
	delay   time.Duration
}

func newNetFaults() *netFaults { return &netFaults{proxies: map[string]*faultproxy.Proxy{}} }

// dial is the Redis client's Dialer: addr through its proxy.
func (f *netFaults) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p, err := f.proxy(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, p.Addr())
}

func (f *netFaults) proxy(addr string) (*faultproxy.Proxy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.proxies[addr]; ok {
		return p, nil
	}
	p, err := faultproxy.New(addr)
	if err != nil {
		return nil, err
	}
	if f.paused {
		p.Pause()
	}
	p.Delay(f.delay)
	f.proxies[addr] = p
	return p, nil
}

// set applies a fault to every link: "partition" holds all traffic to
// Redis (what was sent meanwhile reaches Redis, in order, on heal, as it
// does after a real partition heals), "delay" adds d to every chunk each
// way, "reset" resets every connection, "heal" ends the partition and the
// delay.
func (f *netFaults) set(mode string, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch mode {
	case "partition":
		f.paused = true
		for _, p := range f.proxies {
			p.Pause()
		}
	case "delay":
		f.delay = d
		for _, p := range f.proxies {
			p.Delay(d)
		}
	case "reset":
		for _, p := range f.proxies {
			p.ResetConnections()
		}
	case "heal":
		f.paused, f.delay = false, 0
		for _, p := range f.proxies {
			p.Delay(0)
			p.Resume()
		}
	default:
		return fmt.Errorf("unknown network fault %q: want partition, delay, reset or heal", mode)
	}
	return nil
}

func (f *netFaults) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.proxies {
		p.Close()
	}
}

// shiftedClock is the real clock moved by an offset the harness sets: Now,
// Since and Until see the moved time; timers and tickers run on real
// durations, as they do when a host's clock is stepped.
type shiftedClock struct {
	clockwork.Clock
	offset atomic.Int64 // nanoseconds
}

func newShiftedClock() *shiftedClock { return &shiftedClock{Clock: clockwork.NewRealClock()} }

func (c *shiftedClock) Now() time.Time { return c.Clock.Now().Add(time.Duration(c.offset.Load())) }

func (c *shiftedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *shiftedClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

// faultHandlers serves POST /chaos/net (mode=partition|delay|reset|heal,
// delay=DURATION) and POST /chaos/clock (offset=DURATION, 0 to undo).
func (n *node) faultHandlers(mux *http.ServeMux) {
	mux.HandleFunc("POST /chaos/net", func(w http.ResponseWriter, r *http.Request) {
		var d time.Duration
		if s := r.FormValue("delay"); s != "" {
			var err error
			if d, err = time.ParseDuration(s); err != nil {
				http.Error(w, "delay: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		if err := n.net.set(r.FormValue("mode"), d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n.log.Warn("chaos: network fault", "mode", r.FormValue("mode"), "delay", d)
	})
	mux.HandleFunc("POST /chaos/clock", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.FormValue("offset"))
		if err != nil {
			http.Error(w, "offset: "+err.Error(), http.StatusBadRequest)
			return
		}
		n.clock.offset.Store(int64(d))
		n.log.Warn("chaos: clock moved", "offset", d)
	})
}
