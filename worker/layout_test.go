package worker

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/store"
)

// A worker node refuses to start on a Redis whose key layout is another
// version, before it claims a store or announces itself.
func TestStartRefusesAnotherLayout(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	rdb.Set(t.Context(), keyspace.LayoutKey, "2", 0)
	root := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: filepath.Join(root, "data"), BackupDir: filepath.Join(root, "backups"),
		Stores: []string{"orders"}, NoSync: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	w, err := New(Config{Redis: rdb, Registry: reg, Node: "n1", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Start(t.Context())
	if !errors.Is(err, jobs.ErrLayoutMismatch) || !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("Start = %v, want a layout mismatch naming both versions", err)
	}
	if n := rdb.Exists(t.Context(), keyspace.StoresKey, keyspace.NodesKey).Val(); n != 0 {
		t.Fatal("the refused worker claimed a store or announced itself")
	}
}

// On a fresh Redis the first worker writes the layout version.
func TestStartWritesLayout(t *testing.T) {
	b := setup(t, nil, "orders")
	if v := b.rdb.Get(t.Context(), keyspace.LayoutKey).Val(); v != "1" {
		t.Fatalf("layout %q after a start, want 1", v)
	}
}
