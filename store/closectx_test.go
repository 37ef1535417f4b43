package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// CloseContext leaves a store whose iterator outlives ctx open (serving, and
// the data directory locked) and names it; a later Close, once the
// iterator is closed, closes it.
func TestCloseContextLeavesBusyStoreOpen(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(Config{DataDir: dir, Stores: []string{"busy", "idle"}, Logger: testLogger(t), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	busy, idle := mustStore(t, r, "busy"), mustStore(t, r, "idle")
	if err := busy.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	it, err := busy.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// End ctx once the busy store is fenced and waiting for its iterator.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r.OnStateChange(func(store string, st State, _ error) {
		if store == "busy" && st == StateClosed {
			cancel()
		}
	})
	err = r.CloseContext(ctx)
	if err == nil || !strings.Contains(err.Error(), "busy") || strings.Contains(err.Error(), "idle") || !errors.Is(err, context.Canceled) {
		t.Fatalf("CloseContext with an iterator open = %v, want an error naming busy only", err)
	}
	if st, _ := idle.State(); st != StateClosed {
		t.Fatalf("idle store: %v, want closed", st)
	}
	if st, _ := busy.State(); st != StateOpen {
		t.Fatalf("busy store: %v, want left open", st)
	}
	if !it.First() || string(it.Value()) != "1" {
		t.Fatal("the iterator stopped working")
	}
	if v, err := busy.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get on the store left open = %q, %v", v, err)
	}
	if _, err := r.Store("busy"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Store after CloseContext = %v, want ErrClosed", err)
	}
	if _, err := Open(Config{DataDir: dir, Logger: testLogger(t)}); !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("Open while a store is left open = %v, want ErrDataDirLocked", err)
	}

	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close after the iterator closed = %v", err)
	}
	if st, _ := busy.State(); st != StateClosed {
		t.Fatalf("busy store after Close: %v", st)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	r2, err := Open(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open after Close = %v", err)
	}
	s := mustStore(t, r2, "busy")
	if v, err := s.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("reopened: %q, %v", v, err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
}
