package store

import (
	"testing"
	"time"
)

// Stats reuses what it read from Pebble only while nothing could have
// changed it: a write through a handle, or any Pebble event (here the
// flush and compaction a forced compaction makes), reads it again.
func TestStatsCacheFollowsChanges(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"a"}})
	s := mustStore(t, r, "a")
	readAt := func() time.Time {
		s.lsm.mu.Lock()
		defer s.lsm.mu.Unlock()
		return s.lsm.at
	}
	s.Stats()
	before := readAt()
	if err := s.Set([]byte("k"), make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if s.Stats(); !readAt().After(before) {
		t.Fatal("stats after a write came from the cache")
	}
	empty := s.Stats()
	if _, err := s.Compact(t.Context(), CompactOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	if after.LiveBytes == 0 || after.LiveBytes == empty.LiveBytes || after.Levels[6].Tables == 0 {
		t.Fatalf("stats after a compaction are stale: before %+v, after %+v", empty, after)
	}
	// Unchanged for longer than lsmCacheAge: read again anyway.
	s.lsm.mu.Lock()
	s.lsm.at = time.Now().Add(-2 * lsmCacheAge)
	old := s.lsm.at
	s.lsm.mu.Unlock()
	if s.Stats(); !readAt().After(old) {
		t.Fatal("stats older than lsmCacheAge were reused")
	}
}
