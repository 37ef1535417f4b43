package faultproxy

import (
	"context"
	"errors"
	"fmt"
)

// Hold holds back the commands its match accepts, and everything sent after
// one of them on the same connection, until it releases them. Create one
// with Proxy.Hold.
type Hold struct {
	p     *Proxy
	match func(args []string) bool

	// Guarded by p.mu.
	released  bool      // Release was called: new matches pass
	held      int       // matching commands held so far
	forwarded int       // matching commands written upstream so far
	pending   []heldCmd // held and not yet released, in arrival order
}

type heldCmd struct {
	c   *conn
	cmd *command
}

// Hold starts holding, from now on, every command for which match returns
// true. match gets the command's name and arguments as sent (e.g.
// "evalsha", sha, numkeys, keys..., args...); it runs with the proxy's lock
// held, so it must be quick and must not call the Proxy. A command that
// matches several holds is held by the earliest of them.
func (p *Proxy) Hold(match func(args []string) bool) *Hold {
	h := &Hold{p: p, match: match}
	p.mu.Lock()
	p.holds = append(p.holds, h)
	p.mu.Unlock()
	return h
}

// Wait blocks until at least n matching commands have been held, or ctx
// ends.
func (h *Hold) Wait(ctx context.Context, n int) error {
	if err := h.p.waitFor(ctx, func() bool { return h.held >= n }); err != nil {
		return fmt.Errorf("faultproxy: wait for %d held commands (have %d): %w", n, h.Held(), err)
	}
	return nil
}

// Held returns how many matching commands have been held so far, released
// or not.
func (h *Hold) Held() int {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	return h.held
}

// Forwarded returns how many matching commands have been forwarded
// upstream: those held and then released, and those that passed after
// Release. A command counts as the proxy writes it, so by the time its
// reply reaches the client, or ReleaseOne returns, it is counted.
func (h *Hold) Forwarded() int {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	return h.forwarded
}

// ReleaseOne forwards the earliest matching command still held, with what
// followed it on its connection up to that connection's next held command,
// and waits until upstream has answered all of that, so that the caller
// knows it ran. Its error says if nothing was held, if the connection was
// closed (DropConnections, or upstream closed it) first, or if upstream did
// not answer within 10s, for example because it was paused or the command
// waits behind another Hold's.
func (h *Hold) ReleaseOne() error {
	h.p.mu.Lock()
	hc, ok := h.popLocked()
	h.p.mu.Unlock()
	if !ok {
		return errors.New("faultproxy: release one: no command is held")
	}
	return h.p.release(hc)
}

// Release stops holding new matches and forwards everything still held, one
// held command (with what followed it, as for ReleaseOne) at a time in
// arrival order, each only once upstream has answered the one before, so
// that the order in which they run is deterministic. If one fails, the rest
// are let go without waiting and the error is returned.
func (h *Hold) Release() error {
	h.p.mu.Lock()
	h.released = true
	h.p.mu.Unlock()
	for {
		h.p.mu.Lock()
		hc, ok := h.popLocked()
		h.p.mu.Unlock()
		if !ok {
			return nil
		}
		if err := h.p.release(hc); err != nil {
			h.p.mu.Lock()
			for _, hc := range h.pending {
				hc.cmd.released = true
			}
			h.pending = nil
			h.p.broadcastLocked()
			h.p.mu.Unlock()
			return err
		}
	}
}

// popLocked removes and returns the earliest pending command whose
// connection is still open.
func (h *Hold) popLocked() (heldCmd, bool) {
	for len(h.pending) > 0 {
		hc := h.pending[0]
		h.pending = h.pending[1:]
		if !hc.c.dead {
			return hc, true
		}
	}
	return heldCmd{}, false
}

// release lets hc's command go and waits until upstream has answered the
// chunk it was forwarded in.
func (p *Proxy) release(hc heldCmd) error {
	c, cmd := hc.c, hc.cmd
	p.mu.Lock()
	cmd.released = true
	p.broadcastLocked()
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(p.ctx, answerTimeout)
	defer cancel()
	answered := func() bool { return cmd.end > 0 && c.answered >= cmd.end }
	err := p.waitFor(ctx, func() bool { return c.dead || answered() })
	if err != nil {
		return fmt.Errorf("faultproxy: release %s: not answered: %w", cmd.args[0], err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !answered() {
		return fmt.Errorf("faultproxy: release %s: connection closed before upstream answered", cmd.args[0])
	}
	return nil
}
