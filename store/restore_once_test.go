package store

import (
	"testing"
)

// A restore retried with the same key changes nothing and reports the
// restore that happened: the chaos run found a restore attempt that
// rolled its store back but could not record it (Redis refused writes,
// then its lease ran out) followed by a second attempt that rolled the
// store back again, to another backup, so that the first rollback's
// window was named nowhere. Across a reopen (a new process) too.
func TestRestoreOnce(t *testing.T) {
	f := newBackupFixture(t, "orders")
	r := f.open(t)
	s := mustStore(t, r, "orders")
	if err := s.Set([]byte("before"), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	first := mustBackup(t, s)
	if err := s.Set([]byte("rolled-back"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	res, err := s.RestoreOnce(t.Context(), "job-1", "")
	if err != nil || res.Replayed || res.BackupID != first.Backup.ID {
		t.Fatalf("first RestoreOnce: %+v, %v", res, err)
	}
	// Writes after the restore, and a newer backup a second restore would
	// take.
	if err := s.Set([]byte("after-restore"), []byte("must stay")); err != nil {
		t.Fatal(err)
	}
	mustBackup(t, s)
	if err := s.Set([]byte("after-second-backup"), []byte("must stay")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = f.open(t)
	s = mustStore(t, r, "orders")
	again, err := s.RestoreOnce(t.Context(), "job-1", "")
	if err != nil || !again.Replayed || again.BackupID != first.Backup.ID || !again.BackupAt.Equal(res.BackupAt) || again.Quarantine != res.Quarantine {
		t.Fatalf("RestoreOnce again with the same key: %+v, %v; want the first restore's result, replayed", again, err)
	}
	for _, k := range []string{"before", "after-restore", "after-second-backup"} {
		if _, err := s.Get([]byte(k)); err != nil {
			t.Errorf("%s after the replayed restore: %v", k, err)
		}
	}
	if got, ok, err := s.RestoredWith("job-1"); err != nil || !ok || got.BackupID != first.Backup.ID {
		t.Errorf("RestoredWith(job-1) = %+v, %v, %v", got, ok, err)
	}
	// Another key restores.
	other, err := s.RestoreOnce(t.Context(), "job-2", "")
	if err != nil || other.Replayed || other.BackupID == first.Backup.ID {
		t.Fatalf("RestoreOnce with another key: %+v, %v", other, err)
	}
	if _, err := s.Get([]byte("after-second-backup")); err == nil {
		t.Error("the second restore did not roll back")
	}
	if _, ok, _ := s.RestoredWith("job-1"); ok {
		t.Error("RestoredWith(job-1) after job-2's restore")
	}
}
