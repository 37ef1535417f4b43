// Package testsignal lets tests wait for an internal step of a component
// instead of sleeping (River's testsignal pattern).
//
// A component keeps a struct of Signal fields. In production they are
// zero: Signal is a nil check and costs nothing. A test calls Init on the
// signals it needs before starting the component, then Wait for each step
// it expects, so "it happened" and "the step that could have done it has
// finished" are both positive events rather than the end of a sleep.
//
// WaitFor covers what a test cannot be signalled about (a key in Redis
// written by another process, a socket closed by a peer): a condition
// checked every few milliseconds until a deadline.
package testsignal

import (
	"fmt"
	"time"
)

// Timeout is how long Wait and WaitFor wait before failing the test: long
// enough for a loaded CI machine under -race, short enough to fail.
const Timeout = 20 * time.Second

// buffer is how many signals a test may leave unread before Signal
// panics: a component signals far fewer in any one test.
const buffer = 1000

// TB is the part of testing.TB the package uses; declared here so that
// production packages that hold Signals do not link package testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Signal is a step a test can wait for. The zero value is off.
type Signal[T any] struct {
	ch chan T
	tb TB
}

// Init turns the signal on. Call it before the component that signals
// starts: Init is not safe to run concurrently with Signal.
func (s *Signal[T]) Init(tb TB) {
	s.ch = make(chan T, buffer)
	s.tb = tb
}

// Signal records that the step happened, with v. It never blocks: a
// signal nobody reads up to the buffer's size is a test bug, and panics.
func (s *Signal[T]) Signal(v T) {
	if s.ch == nil {
		return
	}
	select {
	case s.ch <- v:
	default:
		panic(fmt.Sprintf("testsignal: %d signals unread", buffer))
	}
}

// Wait returns the next signal, failing the test after Timeout.
func (s *Signal[T]) Wait() T {
	s.tb.Helper()
	if s.ch == nil {
		s.tb.Fatalf("testsignal: Wait on a signal that was not initialised")
	}
	t := time.NewTimer(Timeout)
	defer t.Stop()
	select {
	case v := <-s.ch:
		return v
	case <-t.C:
		s.tb.Fatalf("testsignal: no signal within %s", Timeout)
		var zero T
		return zero
	}
}

// WaitUntil returns the first signal ok accepts, dropping the others.
func (s *Signal[T]) WaitUntil(ok func(T) bool) T {
	s.tb.Helper()
	for {
		if v := s.Wait(); ok(v) {
			return v
		}
	}
}

// RequireEmpty fails the test if a signal is waiting unread.
func (s *Signal[T]) RequireEmpty() {
	s.tb.Helper()
	select {
	case v := <-s.ch:
		s.tb.Fatalf("testsignal: unexpected signal %v", v)
	default:
	}
}

// WaitFor waits until cond holds, checking it every few milliseconds, and
// fails the test naming what after Timeout. Use it for state the test
// cannot be signalled about; prefer a Signal or a channel otherwise.
func WaitFor(tb TB, what string, cond func() bool) {
	tb.Helper()
	WaitForWithin(tb, Timeout, what, cond)
}

// WaitForWithin is WaitFor with its own deadline, for a test whose claim
// is that cond holds within limit.
func WaitForWithin(tb TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Poll(limit, cond) {
		tb.Fatalf("%s: not within %s", what, limit)
	}
}

// Poll checks cond every few milliseconds until it holds (true) or limit
// passes (false), for a test that says more than WaitFor when it fails.
func Poll(limit time.Duration, cond func() bool) bool {
	if cond() {
		return true
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
			if cond() {
				return true
			}
		}
	}
}
