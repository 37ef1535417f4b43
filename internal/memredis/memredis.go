// Package memredis runs an in-process Redis (miniredis) for storekeeper's
// embedded default and for tests where redis-server is missing.
//
// miniredis does not expire keys by itself: a ticker advances its clock by
// a second every second (FastForward), which is all asynq needs (docs/design.md:
// its ClockTTL option instead collapses throughput). Everything lives in
// memory and is gone when the process exits.
package memredis

import (
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Server is a running in-process Redis.
type Server struct {
	mr   *miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start starts a server on a free loopback port.
func Start() (*Server, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, fmt.Errorf("memredis: start: %w", err)
	}
	s := &Server{mr: mr, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				mr.FastForward(time.Second)
			case <-s.stop:
				return
			}
		}
	}()
	return s, nil
}

// Addr returns host:port.
func (s *Server) Addr() string { return s.mr.Addr() }

// Close stops the server; it is safe to call more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.mr.Close()
	})
}
