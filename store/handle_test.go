package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"storekeeper/internal/testsignal"
)

func TestHandleReadWrite(t *testing.T) {
	s := mustStore(t, openTest(t, Config{Stores: []string{"kv"}}), "kv")
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get(a) = %q, %v", v, err)
	}
	if _, err := s.Get([]byte("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(nope) = %v, want ErrNotFound", err)
	}
	err := s.Update(func(b *Batch) error {
		for i := range 10 {
			if err := b.Set(fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
				return err
			}
		}
		return b.Delete([]byte("a"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(a) after batch delete = %v", err)
	}
	if err := s.DeleteRange([]byte("k2"), []byte("k5")); err != nil {
		t.Fatal(err)
	}
	it, err := s.NewIter([]byte("k"), []byte("l"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, string(it.Key()))
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[k0 k1 k5 k6 k7 k8 k9]" {
		t.Fatalf("keys = %v", keys)
	}
	// A failing batch commits nothing.
	boom := errors.New("boom")
	if err := s.Update(func(b *Batch) error { _ = b.Set([]byte("x"), nil); return boom }); !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	if _, err := s.Get([]byte("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted batch was committed: %v", err)
	}
}

// Readers and writers hammer a store while it is fenced and reopened over
// and over, then closed: nothing panics, and every error is typed.
func TestHandlesUnderFenceAndClose(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"kv"}})
	s := mustStore(t, r, "kv")
	var (
		stop           atomic.Bool
		wg             sync.WaitGroup
		ok, refused    atomic.Int64
		unexpectedErrs = make(chan error, 16)
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				key := fmt.Appendf(nil, "w%d-%d", w, i%100)
				var err error
				switch i % 4 {
				case 0:
					err = s.Set(key, key)
				case 1:
					_, err = s.Get(key)
					if errors.Is(err, ErrNotFound) {
						err = nil
					}
				case 2:
					err = s.Update(func(b *Batch) error { return b.Delete(key) })
				case 3:
					var it *Iterator
					if it, err = s.NewIter(nil, nil); err == nil {
						for ok := it.First(); ok; ok = it.Next() {
						}
						err = it.Close()
					}
				}
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
					refused.Add(1)
				default:
					select {
					case unexpectedErrs <- err:
					default:
					}
				}
			}
		}()
	}
	for range 20 {
		db, err := s.fence(t.Context(), StateRestoring)
		if err != nil {
			t.Fatalf("fence: %v", err)
		}
		if _, err := s.Get([]byte("x")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get while fenced = %v, want ErrUnavailable", err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.open(); err != nil {
			t.Fatalf("reopen: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Set after Close = %v, want ErrClosed", err)
	}
	stop.Store(true)
	wg.Wait()
	close(unexpectedErrs)
	for err := range unexpectedErrs {
		t.Errorf("unexpected error: %v", err)
	}
	if ok.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("ok=%d refused=%d: the test did not exercise both paths", ok.Load(), refused.Load())
	}
	t.Logf("ok=%d refused=%d", ok.Load(), refused.Load())
}

func TestCloseWaitsForIterators(t *testing.T) {
	s := mustStore(t, openTest(t, Config{Stores: []string{"kv"}}), "kv")
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	it, err := s.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// New work is refused as soon as Close begins...
	testsignal.WaitForWithin(t, 5*time.Second, "Close refusing work", func() bool {
		_, err := s.Get([]byte("a"))
		return errors.Is(err, ErrClosed)
	})
	// ...but the open iterator still works and Close waits for it.
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an iterator was open", err)
	case <-time.After(50 * time.Millisecond):
	}
	if !it.First() || string(it.Value()) != "1" {
		t.Fatal("open iterator stopped working during Close")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := it.Close(); err != nil {
		t.Fatalf("second iterator Close = %v", err)
	}
}
