package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// A store's status lists its backups without their file lists, which are
// published apart, with the status, only when the backups change (or
// after backupFilesRefresh): a status is rewritten at every job's end
// and every heartbeat, and a few backups of a large store list thousands
// of files.
func TestBackupFilesPublishedApart(t *testing.T) {
	clock := clockwork.NewFakeClock()
	b := setupWith(t, options{worker: func(c *Config) { c.Clock = clock }}, nil, "orders")
	s, _ := b.reg.Store("orders")
	for i := range 200 {
		_ = s.Set(fmt.Appendf(nil, "k%05d", i), make([]byte, 100))
	}
	run := func(kind jobs.Kind) {
		t.Helper()
		b.waitState(t, b.enqueue(t, kind, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	}
	files := func() (jobs.BackupFileLists, bool) {
		t.Helper()
		v, err := b.rdb.Get(t.Context(), keyspace.BackupFilesKey("orders")).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, false
		} else if err != nil {
			t.Fatal(err)
		}
		var l jobs.BackupFileLists
		if err := json.Unmarshal(v, &l); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		return l, true
	}
	// want: the file lists of the store's backups, as the store lists them.
	want := func() jobs.BackupFileLists {
		t.Helper()
		bs, err := s.Backups()
		if err != nil {
			t.Fatal(err)
		}
		out := jobs.BackupFileLists{}
		for _, b := range bs {
			out[b.ID] = backupSummary(b).Files
		}
		return out
	}
	same := func(got, want jobs.BackupFileLists) bool {
		if len(got) != len(want) {
			return false
		}
		for id, w := range want {
			g, ok := got[id]
			if !ok || len(w) == 0 || !slices.Equal(g, w) {
				return false
			}
		}
		return true
	}

	run(jobs.KindBackup)
	raw, err := b.rdb.Get(t.Context(), keyspace.StatsKey("orders")).Result()
	if err != nil {
		t.Fatal(err)
	}
	var st jobs.StoreStatus
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Backups) != 1 || st.Backups[0].Files != nil || strings.Contains(raw, `"sha256"`) {
		t.Fatalf("the status carries file lists: %s", raw)
	}
	if got, ok := files(); !ok || !same(got, want()) {
		t.Fatalf("published file lists %v, want %v", got, want())
	}

	// Unchanged backups are not sent again: with the key gone (as if
	// Redis lost it), a job's end, which publishes the status, leaves it
	// gone...
	b.rdb.Del(t.Context(), keyspace.BackupFilesKey("orders"))
	run(jobs.KindVerify)
	if got, ok := files(); ok {
		t.Fatalf("unchanged file lists published again: %v", got)
	}
	// ... until backupFilesRefresh has passed.
	clock.Advance(backupFilesRefresh)
	run(jobs.KindVerify)
	if got, ok := files(); !ok || !same(got, want()) {
		t.Fatalf("after the refresh: %v, want %v", got, want())
	}

	// A new backup's end publishes every backup's files with it.
	run(jobs.KindBackup)
	if got, ok := files(); !ok || len(got) != 2 || !same(got, want()) {
		t.Fatalf("after a second backup: %d lists %v, want %v", len(got), got, want())
	}
}
