package jobsdb

import (
	"errors"
	"strings"
	"testing"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

func TestCheckLayout(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	// A fresh Redis: the first node writes its version.
	if err := CheckLayout(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if v, err := rdb.Get(ctx, keyspace.LayoutKey).Result(); err != nil || v != "1" {
		t.Fatalf("%s = %q, %v; want 1", keyspace.LayoutKey, v, err)
	}
	// The same version: the next node starts.
	if err := CheckLayout(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	// Another version: refused, naming both and the upgrade procedure,
	// and the stored version is left alone.
	for _, stored := range []string{"2", "two"} {
		rdb.Set(ctx, keyspace.LayoutKey, stored, 0)
		err := CheckLayout(ctx, rdb)
		if !errors.Is(err, jobs.ErrLayoutMismatch) {
			t.Fatalf("layout %q: err = %v, want ErrLayoutMismatch", stored, err)
		}
		for _, want := range []string{"version " + map[string]string{"2": "2", "two": `"two"`}[stored], "version 1", "docs/design.md", "stop every node"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("layout %q: %q does not say %q", stored, err, want)
			}
		}
		if v := rdb.Get(ctx, keyspace.LayoutKey).Val(); v != stored {
			t.Fatalf("the check rewrote the version: %q", v)
		}
	}
}

// A node of version 2 meeting this Redis refuses to start just the same.
func TestCheckLayoutNewerBuild(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	if err := CheckLayout(t.Context(), rdb); err != nil {
		t.Fatal(err)
	}
	err := checkLayout(t.Context(), rdb, 2)
	if !errors.Is(err, jobs.ErrLayoutMismatch) || !strings.Contains(err.Error(), "version 1") || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("err = %v", err)
	}
}
