package faultproxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	dialTimeout = 5 * time.Second
	// answerTimeout bounds how long ReleaseOne, Release and Resume wait for
	// upstream, and how long a connection whose client has gone waits for
	// the replies to what was forwarded for it before it is closed.
	answerTimeout = 10 * time.Second
	readSize      = 32 << 10
)

// ErrClosed is returned by operations interrupted by Close.
var ErrClosed = errors.New("faultproxy: proxy closed")

// Proxy is a TCP proxy in front of one Redis. See the package doc.
type Proxy struct {
	upstream  string
	ln        net.Listener
	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // every goroutine the proxy started
	delay     atomic.Int64   // time.Duration slept before each forwarded chunk
	closeOnce sync.Once

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the state below changes
	closed  bool
	conns   map[*conn]struct{}
	holds   []*Hold
	seq     uint64 // arrival number of the latest command, over all connections
	paused  bool
}

// conn is one client connection and its own upstream connection. Three
// goroutines serve it: readClient parses what the client sends into queue,
// forward writes the commands that may go upstream, and readUpstream copies
// the replies back and counts them.
type conn struct {
	client, server net.Conn

	// Guarded by Proxy.mu.
	queue        []*command // arrived but not yet taken for forwarding
	taken        int        // commands taken for forwarding; their upstream indices are 1..taken
	written      int        // commands written upstream
	answered     int        // replies read from upstream
	mustAnswer   int        // upstream index whose reply must be read before closing
	clientClosed bool       // the client has gone; replies are discarded
	resumeOK     bool       // may forward while paused: Resume is at this connection
	dead         bool       // both sockets are closed
}

// command is one parsed client command.
type command struct {
	raw      []byte   // its bytes exactly as the client sent them
	args     []string // its name and arguments
	seq      uint64   // arrival number
	matched  []*Hold  // holds whose match accepted it, for Forwarded
	hold     *Hold    // the hold that holds it back, if any
	released bool     // hold has let it go
	end      int      // upstream index of the last command of the chunk it was forwarded in
}

// heldBack reports whether cmd, and so everything after it on its
// connection, must wait.
func (cmd *command) heldBack() bool { return cmd.hold != nil && !cmd.released }

// New starts a proxy on a free 127.0.0.1 port that forwards to upstream
// (host:port). Call Close when done.
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		upstream: upstream,
		ln:       ln,
		ctx:      ctx,
		cancel:   cancel,
		changed:  make(chan struct{}),
		conns:    make(map[*conn]struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Start starts a proxy to upstream for tb and closes it when tb's test ends.
func Start(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	p, err := New(upstream)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the host:port clients should connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close closes the listener and every connection, drops whatever is still
// held, and waits for the proxy's goroutines to end. It is safe to call more
// than once.
func (p *Proxy) Close() {
	p.closeOnce.Do(func() {
		p.cancel()
		p.ln.Close()
		p.mu.Lock()
		p.closed = true
		conns := p.connsLocked()
		p.mu.Unlock()
		for _, c := range conns {
			p.kill(c, false)
		}
		p.wg.Wait()
	})
}

// Delay makes the proxy sleep d before forwarding each chunk, in both
// directions; 0 turns it off. The sleeps of one connection and direction
// add up: a chunk waits for the one before it.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// Pause holds all client-to-server traffic, on every connection, existing
// or new, like a SIGSTOPped Redis whose kernel still accepts connections and
// buffers what clients send.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume ends a Pause. It forwards what was waiting connection by
// connection, in the arrival order of each connection's first waiting
// command, each written before the next connection's, and then lets all
// traffic flow again. Commands a Hold holds stay held.
func (p *Proxy) Resume() {
	type waiting struct {
		c     *conn
		first uint64 // arrival number of its first waiting command
		upTo  int    // its upstream index once those commands are written
	}
	var ws []waiting
	p.mu.Lock()
	if !p.paused {
		p.mu.Unlock()
		return
	}
	for c := range p.conns {
		if n := forwardable(c.queue); n > 0 {
			ws = append(ws, waiting{c, c.queue[0].seq, c.taken + n})
		}
	}
	p.mu.Unlock()
	slices.SortFunc(ws, func(a, b waiting) int { return cmp.Compare(a.first, b.first) })

	ctx, cancel := context.WithTimeout(p.ctx, answerTimeout)
	defer cancel()
	for _, w := range ws {
		p.mu.Lock()
		w.c.resumeOK = true
		p.broadcastLocked()
		p.mu.Unlock()
		p.waitFor(ctx, func() bool { return w.c.dead || w.c.written >= w.upTo })
	}

	p.mu.Lock()
	p.paused = false
	for c := range p.conns {
		c.resumeOK = false
	}
	p.broadcastLocked()
	p.mu.Unlock()
}

// DropConnections closes every current client and upstream connection, as
// a crashed or restarted Redis would (FIN). What they held is lost. New
// connections are accepted as before.
func (p *Proxy) DropConnections() { p.killAll(false) }

// ResetConnections is DropConnections with a TCP reset (RST) instead of an
// orderly close.
func (p *Proxy) ResetConnections() { p.killAll(true) }

func (p *Proxy) killAll(reset bool) {
	p.mu.Lock()
	conns := p.connsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		p.kill(c, reset)
	}
}

func (p *Proxy) connsLocked() []*conn {
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

// kill closes both of c's sockets, with RST if reset; the goroutines
// serving c then end.
func (p *Proxy) kill(c *conn, reset bool) {
	p.mu.Lock()
	if c.dead {
		p.mu.Unlock()
		return
	}
	c.dead = true
	delete(p.conns, c)
	p.broadcastLocked()
	p.mu.Unlock()
	if reset {
		for _, nc := range []net.Conn{c.client, c.server} {
			if tc, ok := nc.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
		}
	}
	c.client.Close()
	c.server.Close()
}

// broadcastLocked wakes everyone waiting in waitFor or for work.
func (p *Proxy) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// waitFor blocks until cond, called with p.mu held, is true, or ctx ends,
// or the proxy is closed.
func (p *Proxy) waitFor(ctx context.Context, cond func() bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !cond() {
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-p.ctx.Done():
		}
		p.mu.Lock()
		if p.ctx.Err() != nil {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// sleep sleeps d, or less if the proxy is closed meanwhile; it reports
// whether the proxy is still open.
func (p *Proxy) sleep(d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.ctx.Done():
		}
	}
	return p.ctx.Err() == nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve connects client to its own upstream connection and reads what the
// client sends until it goes.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.DialContext(p.ctx, "tcp", p.upstream)
	if err != nil {
		client.Close()
		return
	}
	c := &conn{client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.wg.Add(2)
	p.mu.Unlock()
	go p.forward(c)
	go p.readUpstream(c)
	p.readClient(c)
}

// readClient splits what the client sends into commands and queues them,
// keeping a partial command until the rest arrives. When the client goes,
// the commands already queued stay, to be forwarded.
func (p *Proxy) readClient(c *conn) {
	var buf []byte
	b := make([]byte, readSize)
	for {
		n, err := c.client.Read(b)
		buf = append(buf, b[:n]...)
		var cmds []*command
		off := 0
		for {
			args, k, perr := parseCommand(buf[off:])
			if perr != nil {
				err = perr // like Redis, stop reading this client
				break
			}
			if k == 0 {
				break
			}
			if args != nil {
				cmds = append(cmds, &command{raw: bytes.Clone(buf[off : off+k]), args: args})
			}
			off += k
		}
		buf = append(buf[:0], buf[off:]...)
		p.arrive(c, cmds)
		if err != nil {
			c.client.Close()
			p.mu.Lock()
			c.clientClosed = true
			p.broadcastLocked()
			p.mu.Unlock()
			return
		}
	}
}

// arrive numbers cmds, matches them against the holds and queues them.
func (p *Proxy) arrive(c *conn, cmds []*command) {
	if len(cmds) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cmd := range cmds {
		p.seq++
		cmd.seq = p.seq
		for _, h := range p.holds {
			if !h.match(cmd.args) {
				continue
			}
			cmd.matched = append(cmd.matched, h)
			if cmd.hold == nil && !h.released {
				cmd.hold = h
				h.held++
				h.pending = append(h.pending, heldCmd{c, cmd})
			}
		}
	}
	c.queue = append(c.queue, cmds...)
	p.broadcastLocked()
}

// forwardable returns how many commands at the head of queue may go.
func forwardable(queue []*command) int {
	i := 0
	for i < len(queue) && !queue[i].heldBack() {
		i++
	}
	return i
}

// forward writes c's commands upstream as they become free to go. Once the
// client has gone and everything it sent is forwarded, it waits for the
// replies to what was held or forwarded after the client had gone, and then
// closes the upstream connection: a command held for a client that timed
// out still runs to completion, and ReleaseOne sees its reply.
func (p *Proxy) forward(c *conn) {
	defer p.wg.Done()
	defer p.kill(c, false)
	for {
		chunk, cmds := p.next(c)
		if cmds == nil {
			break
		}
		if !p.sleep(time.Duration(p.delay.Load())) {
			return
		}
		// Counted before the write, so that it is never behind a reply a
		// client has already got.
		p.mu.Lock()
		for _, cmd := range cmds {
			for _, h := range cmd.matched {
				h.forwarded++
			}
		}
		p.mu.Unlock()
		_, err := c.server.Write(chunk)
		if err != nil {
			return
		}
		p.mu.Lock()
		c.written += len(cmds)
		p.broadcastLocked()
		p.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(p.ctx, answerTimeout)
	defer cancel()
	p.waitFor(ctx, func() bool { return c.dead || c.answered >= c.mustAnswer })
}

// next waits until commands at the head of c's queue may go and takes them,
// or returns nil once c is dead or its client has gone and its queue is
// empty.
func (p *Proxy) next(c *conn) (chunk []byte, cmds []*command) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !c.dead && p.ctx.Err() == nil {
		if !p.paused || c.resumeOK {
			if n := forwardable(c.queue); n > 0 {
				cmds, c.queue = c.queue[:n:n], c.queue[n:]
				c.taken += n
				for _, cmd := range cmds {
					cmd.end = c.taken
					chunk = append(chunk, cmd.raw...)
					// A released command's reply is awaited (ReleaseOne),
					// and so is what a gone client left to run.
					if cmd.hold != nil || c.clientClosed {
						c.mustAnswer = c.taken
					}
				}
				return chunk, cmds
			}
		}
		if c.clientClosed && len(c.queue) == 0 {
			break
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.ctx.Done():
		}
		p.mu.Lock()
	}
	return nil, nil
}

// readUpstream copies replies to the client, or discards them once the
// client has gone, and counts them.
func (p *Proxy) readUpstream(c *conn) {
	defer p.wg.Done()
	defer p.kill(c, false)
	var replies replyCounter
	b := make([]byte, readSize)
	for {
		n, err := c.server.Read(b)
		if n > 0 {
			k := replies.feed(b[:n])
			p.mu.Lock()
			c.answered += k
			gone := c.clientClosed
			if k > 0 {
				p.broadcastLocked()
			}
			p.mu.Unlock()
			if !gone && p.sleep(time.Duration(p.delay.Load())) {
				c.client.Write(b[:n]) // if the client has gone, its reader notices
			}
		}
		if err != nil {
			return
		}
	}
}
