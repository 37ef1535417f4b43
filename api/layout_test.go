package api

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// An API node refuses to start on a Redis whose key layout is another
// version; on a fresh Redis it writes its own, and starts on it again.
func TestStartChecksLayout(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	tokens, err := ParseTokens("v:viewer:layout-test-viewer-token-01")
	if err != nil {
		t.Fatal(err)
	}
	start := func() error {
		s, err := New(Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Start(t.Context())
		s.Close()
		return err
	}
	if err := start(); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(t.Context(), keyspace.LayoutKey).Val(); v != "1" {
		t.Fatalf("layout %q after the first start, want 1", v)
	}
	if err := start(); err != nil {
		t.Fatalf("same layout: %v", err)
	}
	rdb.Set(t.Context(), keyspace.LayoutKey, "2", 0)
	err = start()
	if !errors.Is(err, jobs.ErrLayoutMismatch) || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("start on layout 2: %v", err)
	}
}
