package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// A fence that gives up (its context ended while an iterator was open)
// lets the store serve again at once, with readers and writers coming and
// going while nothing waits any more. With a sync.WaitGroup that was a
// panic ("WaitGroup is reused before previous Wait has returned"); handles
// never panic, and a last fence still waits for every user.
func TestFenceGiveUpUnderLoad(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"kv"}})
	s := mustStore(t, r, "kv")
	for i := range 100 {
		if err := s.Set(fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	unexpected := make(chan error, 16)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Appendf(nil, "k%03d", (w*31+i)%100)
				var err error
				switch i % 3 {
				case 0:
					_, err = s.Get(key)
				case 1:
					err = s.Set(key, key)
				case 2:
					var it *Iterator
					if it, err = s.NewIter(nil, nil); err == nil {
						it.First()
						err = it.Close()
					}
				}
				if err != nil && !errors.Is(err, ErrUnavailable) {
					select {
					case unexpected <- err:
					default:
					}
				}
			}
		}()
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for round := range 1000 {
		it, err := s.NewIter(nil, nil)
		if err != nil {
			t.Fatalf("round %d: NewIter: %v", round, err)
		}
		ctx := cancelled
		if round%2 == 1 {
			// A context that ends while fence is waiting, not before.
			var cancelSoon context.CancelFunc
			ctx, cancelSoon = context.WithCancel(t.Context())
			go cancelSoon()
		}
		if _, err := s.fence(ctx, StateRestoring); !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: fence with an iterator open = %v, want it to give up", round, err)
		}
		if st, _ := s.State(); st != StateOpen {
			t.Fatalf("round %d: state after a fence gave up = %v", round, st)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("unexpected error: %v", err)
	}
	if n := s.users.count(); n != 0 {
		t.Fatalf("%d users left after every operation ended", n)
	}

	// A last Close still waits for the iterator left open.
	it, err := s.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fenced := make(chan struct{})
	r.OnStateChange(func(_ string, st State, _ error) {
		if st == StateClosed {
			close(fenced)
		}
	})
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	<-fenced
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an iterator was open", err)
	default:
	}
	if n := s.users.count(); n != 1 {
		t.Fatalf("%d users while one iterator is open", n)
	}
	if !it.First() {
		t.Fatal("the open iterator stopped working during Close")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if _, err := s.Get([]byte("k001")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
}
