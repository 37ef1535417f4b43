package store

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// A table's fingerprint is a function of its entries alone, and stays the
// same across versions of storekeeper: backups and hash caches written by
// an earlier version are compared with fingerprints computed now (by
// drills, by incremental backups). The expected value was computed by the
// version that first wrote fingerprints.
func TestFingerprintIsStable(t *testing.T) {
	dir := t.TempDir()
	opts := &pebble.Options{FS: vfs.Default}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	for i := range 5000 {
		_ = b.Set(fmt.Appendf(nil, "key-%06d", i), fmt.Appendf(nil, "value-%d-%s", i, "xxxxxxxxxxxxxxxxxxxxxxxx"), nil)
	}
	_ = b.DeleteRange([]byte("key-001000"), []byte("key-001100"), nil)
	_ = b.Delete([]byte("key-002000"), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	tables, err := db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, level := range tables {
		for _, tb := range level {
			fp, err := fingerprintTable(opts, vfs.Default, filepath.Join(dir, fmt.Sprintf("%s.sst", tb.FileNum)))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fp.String())
		}
	}
	if want := []string{"fp1:4901:1e546d108571ded7:b0345c418549aec8"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("fingerprints %v, want %v", got, want)
	}
}
