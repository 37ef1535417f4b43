package worker

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

func publishedDrill(t *testing.T, b *bundle) *jobs.DrillStatus {
	t.Helper()
	var st jobs.StoreStatus
	if err := json.Unmarshal([]byte(b.rdb.Get(t.Context(), keyspace.StatsKey("orders")).Val()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Drill
}

func drillResultOf(t *testing.T, r jobs.Record) jobs.DrillResult {
	t.Helper()
	var res jobs.DrillResult
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatalf("drill result %s: %v", r.Result, err)
	}
	return res
}

// Drills without a target take each target in turn; a passing drill is
// silent, measures the RTO and makes the backup the store's last
// restorable point, published with its status. A drill of a corrupted
// copy fails once (not retried), names the object, is notified, and
// keeps the restorable point the earlier drill proved; the live store is
// untouched.
func TestDrillEachTargetInTurnAndACorruptCopyFails(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	a := setupFaults(t, withTargets(openTarget(t, "one", "file://"+d1), openTarget(t, "two", "file://"+d2)), nil, "orders")
	s, _ := a.reg.Store("orders")
	for i := range 500 {
		if err := s.Set(fmt.Appendf(nil, "k%04d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	backup := backupResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)).Backup

	for _, want := range []string{"one", "two", "one"} {
		rec := a.waitState(t, a.enqueue(t, jobs.KindDrill, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
		res := drillResultOf(t, rec)
		if res.Target != want || res.BackupID != backup.ID || !res.FingerprintChecked || res.RTO <= 0 || res.Points == 0 {
			t.Fatalf("drill result %+v; want target %s, backup %s, fingerprint checked, an RTO", res, want, backup.ID)
		}
		a.waitSettled(t, rec.ID)
		st := publishedDrill(t, a.bundle)
		if st == nil || !st.OK || st.Target != want || !st.Restorable.Equal(backup.CreatedAt) || st.RTO != res.RTO {
			t.Fatalf("published drill %+v; want %s passing, restorable as of %s", st, want, backup.CreatedAt)
		}
	}
	if notes := a.settled(t); len(notes) != 0 {
		t.Fatalf("passing drills notified %+v", notes)
	}

	// Damage every object on target two.
	objs, _ := filepath.Glob(filepath.Join(d2, "objects", "*"))
	if len(objs) == 0 {
		t.Fatal("no objects on target two")
	}
	for _, o := range objs {
		b, err := os.ReadFile(o)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(o, ".attrs") || len(b) == 0 {
			continue
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(o, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rec := a.waitState(t, a.enqueue(t, jobs.KindDrill, "orders", jobs.Params{Target: "two"}).ID, jobs.StateFailed)
	if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0].Error, "bad backup") || !strings.Contains(rec.Errors[0].Error, "sha256") {
		t.Fatalf("drill of a corrupted copy: %+v; want one attempt naming the bad file", rec.Errors)
	}
	// The failed drill checked every object of the backup on two and sent
	// the damaged ones again from this node's copy.
	if want := fmt.Sprintf("%d sent again from this node's copy", distinctObjects(backup.Files)); !strings.Contains(rec.Errors[0].Error, want) {
		t.Fatalf("drill of a corrupted copy: %q; want the repair said (%s)", rec.Errors[0].Error, want)
	}
	a.waitSettled(t, rec.ID)
	if notes := a.settled(t); len(notes) != 1 || notes[0].Type != jobs.EventJobFailed || notes[0].Kind != jobs.KindDrill {
		t.Fatalf("notifications %+v; want the failed drill's", notes)
	}
	st := publishedDrill(t, a.bundle)
	if st == nil || st.OK || st.Target != "two" || st.Error == "" || !st.Restorable.Equal(backup.CreatedAt) {
		t.Fatalf("published drill after a failure %+v; want failed, the restorable point kept", st)
	}
	n := 0
	if err := s.Scan(t.Context(), nil, nil, func(_, _ []byte) error { n++; return nil }); err != nil || n != 500 {
		t.Fatalf("live store after drills: %d keys, %v", n, err)
	}
	// Repaired: the next drill of two passes.
	rec = a.waitState(t, a.enqueue(t, jobs.KindDrill, "orders", jobs.Params{Target: "two"}).ID, jobs.StateSucceeded)
	if res := drillResultOf(t, rec); res.Target != "two" || res.BackupID != backup.ID {
		t.Fatalf("drill after the repair: %+v", res)
	}
}

// distinctObjects counts a backup's distinct non-empty contents: the
// objects the test above damages.
func distinctObjects(files []jobs.BackupFile) int {
	seen := map[string]bool{}
	for _, f := range files {
		if f.Size > 0 {
			seen[f.SHA256] = true
		}
	}
	return len(seen)
}

// Without targets a drill restores the newest local backup; with no
// backup at all it fails at once, saying so.
func TestDrillLocalBackups(t *testing.T) {
	a := setupWith(t, options{}, nil, "orders")
	rec := a.waitState(t, a.enqueue(t, jobs.KindDrill, "orders", jobs.Params{}).ID, jobs.StateFailed)
	if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0].Error, "no usable local backup") {
		t.Fatalf("drill with no backup: %+v", rec.Errors)
	}
	s, _ := a.reg.Store("orders")
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	backup := backupResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)).Backup
	res := drillResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindDrill, "orders", jobs.Params{}).ID, jobs.StateSucceeded))
	if res.Target != "" || res.BackupID != backup.ID || !res.FingerprintChecked {
		t.Fatalf("local drill %+v", res)
	}
}

// A node that restarts keeps telling its stores' last drills (and so
// their restorable points): it reads them back from their published
// status.
func TestDrillSurvivesARestart(t *testing.T) {
	a := setupWith(t, options{}, nil, "orders")
	s, _ := a.reg.Store("orders")
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	rec := a.waitState(t, a.enqueue(t, jobs.KindDrill, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	before := publishedDrill(t, a)
	if before == nil || before.JobID != rec.ID {
		t.Fatalf("published drill %+v; want job %s's", before, rec.ID)
	}
	a.w.Shutdown()
	w, err := New(a.w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	// A job's end republishes the store's status from the new process.
	a.waitState(t, a.enqueue(t, jobs.KindCompact, "orders", jobs.Params{DryRun: true}).ID, jobs.StateSucceeded)
	if after := publishedDrill(t, a); after == nil || after.JobID != rec.ID || !after.Restorable.Equal(before.Restorable) {
		t.Fatalf("published drill after a restart %+v; want %+v", after, before)
	}
}
