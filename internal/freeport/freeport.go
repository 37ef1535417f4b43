// Package freeport picks loopback TCP ports for processes a test or the
// chaos harness starts itself.
//
// A port taken from a listener on 127.0.0.1:0 and closed again is one the
// kernel hands out next to anyone who asks for an ephemeral port: a fault
// proxy, an outgoing connection, another test's server. Between the pick
// and the child's bind, such a socket can take it, and the child then
// fails to bind or, worse, a client reaches the wrong server. Loopback
// picks here come from below the kernel's ephemeral range instead, where
// nothing lands by accident, and never twice from one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// floor is the lowest port handed out: above the well-known and most
// registered services' ports.
const floor = 10000

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Loopback returns a port on 127.0.0.1 that nobody listens on now, outside
// the ephemeral range where the system can, and not returned before by
// this process. Where the ephemeral range leaves no room below it, it
// falls back to a port the kernel picks.
func Loopback() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	lo := ephemeralLow()
	if lo-floor >= 1000 {
		for range 200 {
			p := floor + rand.IntN(lo-floor)
			if handed[p] {
				continue
			}
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				continue
			}
			l.Close()
			handed[p] = true
			return p, nil
		}
	}
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("freeport: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handed[p] {
			handed[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("freeport: no free loopback port")
}

// ephemeralLow is the bottom of Linux's ephemeral port range, or its
// default where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}
