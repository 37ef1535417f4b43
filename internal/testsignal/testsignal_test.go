package testsignal

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A signal that is off costs nothing and records nothing; one that is on
// hands each value to Wait in order.
func TestSignal(t *testing.T) {
	var off Signal[int]
	off.Signal(1) // no panic, nothing kept

	var s Signal[int]
	s.Init(t)
	go func() {
		for i := range 3 {
			s.Signal(i)
		}
	}()
	if got := s.WaitUntil(func(v int) bool { return v == 1 }); got != 1 {
		t.Fatalf("WaitUntil = %d, want 1", got)
	}
	if got := s.Wait(); got != 2 {
		t.Fatalf("Wait = %d, want 2", got)
	}
	s.RequireEmpty()
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, "the third check", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("checked %d times, want 3", n)
	}
	if Poll(0, func() bool { return false }) {
		t.Fatal("Poll held a condition that never holds")
	}
}
