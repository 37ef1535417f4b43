package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// A disowned store refuses every write, compaction and restore with
// ErrNotOwner and the cause; reads, stats, backups and verification go
// on; Own lifts it.
func TestDisownRefusesWritesOnly(t *testing.T) {
	root := t.TempDir()
	r := openTest(t, Config{DataDir: filepath.Join(root, "data"), BackupDir: filepath.Join(root, "backups"), Stores: []string{"kv"}})
	s := mustStore(t, r, "kv")
	churn(t, s, 2000, 50)
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	sum, _ := checksum(t, s)
	lease := errors.New("lease lost: fencing token 41 superseded by 42")
	s.Disown(lease)
	if s.Owned() {
		t.Fatal("Owned() after Disown")
	}

	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNotOwner) || !errors.Is(err, lease) || !strings.Contains(err.Error(), lease.Error()) {
			t.Errorf("%s on a disowned store = %v, want ErrNotOwner with the cause", what, err)
		}
	}
	refused("Set", s.Set([]byte("a"), []byte("2")))
	refused("Delete", s.Delete([]byte("a")))
	refused("DeleteRange", s.DeleteRange([]byte("a"), []byte("z")))
	refused("Update", s.Update(func(b *Batch) error { return b.Set([]byte("a"), []byte("3")) }))
	_, err := s.Compact(t.Context(), CompactOptions{Force: true})
	refused("Compact", err)
	_, err = s.Restore(t.Context(), "")
	refused("Restore", err)

	if v, err := s.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get on a disowned store = %q, %v", v, err)
	}
	if got, _ := checksum(t, s); got != sum { // NewIter and Scan
		t.Fatal("content changed while disowned")
	}
	if st := s.Stats(); st.State != StateOpen || st.NotOwner != lease.Error() {
		t.Fatalf("stats of a disowned store: state %v, not_owner %q", st.State, st.NotOwner)
	}
	b, err := s.Backup(t.Context())
	if err != nil {
		t.Fatalf("Backup on a disowned store: %v", err)
	}
	if list, err := s.Backups(); err != nil || len(list) != 1 {
		t.Fatalf("Backups = %v, %v", list, err)
	}
	if _, err := s.Verify(t.Context(), VerifyOptions{Deep: true}); err != nil {
		t.Fatalf("Verify on a disowned store: %v", err)
	}

	// Disowned while an Update's function runs: the batch is not committed.
	s.Own()
	err = s.Update(func(b *Batch) error {
		s.Disown(lease)
		return b.Set([]byte("a"), []byte("4"))
	})
	refused("Update disowned before its commit", err)
	if v, _ := s.Get([]byte("a")); string(v) != "1" {
		t.Fatalf("a batch committed after Disown: a=%q", v)
	}

	s.Own()
	if !s.Owned() || s.Stats().NotOwner != "" {
		t.Fatal("still disowned after Own")
	}
	if err := s.Set([]byte("a"), []byte("5")); err != nil {
		t.Fatalf("Set after Own: %v", err)
	}
	if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
		t.Fatalf("Compact after Own: %v", err)
	}
	if _, err := s.Restore(context.Background(), b.Backup.ID); err != nil {
		t.Fatalf("Restore after Own: %v", err)
	}
	if got, _ := checksum(t, s); got != sum {
		t.Fatal("restore after Own: wrong content")
	}
}
