package store

import (
	"sync"
	"sync/atomic"
)

// userCount counts a store's in-flight operations and open iterators, the
// users fence and Close wait for. A sync.WaitGroup cannot do this job: a
// fence that gives up (its context ended) lets the store serve again while
// its Wait is still pending, and the next Add then panics ("WaitGroup is
// reused before previous Wait has returned"). Here adding while someone
// waits is fine, and a waiter can walk away: it only holds a channel.
//
// The count is an atomic, so that the handles' hot path (every Get, Set
// and iterator) takes no lock; the mutex only orders a waiter's channel
// against the last done.
type userCount struct {
	n    atomic.Int64
	mu   sync.Mutex
	zero chan struct{} // closed when n reaches 0; made by the first waiter
}

// closedChan is returned to waiters when there is nothing to wait for.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (u *userCount) add() { u.n.Add(1) }

func (u *userCount) done() {
	n := u.n.Add(-1)
	if n < 0 {
		u.n.Add(1) // an unpaired done is a bug here, but handles never panic
		return
	}
	if n > 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	// Another user may have come meanwhile; its own done closes it then.
	if u.zero != nil && u.n.Load() == 0 {
		close(u.zero)
		u.zero = nil
	}
}

// drained returns a channel that is closed once no user is left: at once
// when there is none now.
func (u *userCount) drained() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n.Load() == 0 {
		return closedChan
	}
	if u.zero == nil {
		u.zero = make(chan struct{})
	}
	return u.zero
}

// count returns the number of users now.
func (u *userCount) count() int { return int(u.n.Load()) }
