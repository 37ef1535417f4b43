package worker

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"storekeeper/internal/reflectfill"
	"storekeeper/jobs"
	"storekeeper/store"
)

// The jobs types the worker publishes and reports carry every field of the
// store package's values, under the same JSON names: what a worker wrote
// before they existed (the store values themselves) is what it writes now,
// and a field added on one side only fails here.
func TestWireTypesCarryStoreValues(t *testing.T) {
	st, bi := reflectfill.Filled[store.Stats](), reflectfill.Filled[store.BackupInfo]()
	bv := reflectfill.Filled[store.BackupVerifyResult]()
	for _, c := range []struct {
		name             string
		was, now         any
		zeroWas, zeroNow any
	}{
		{name: "stats", was: st, now: storeStats(st), zeroWas: store.Stats{}, zeroNow: storeStats(store.Stats{})},
		{name: "backup", was: bi, now: backupSummary(bi), zeroWas: store.BackupInfo{}, zeroNow: backupSummary(store.BackupInfo{})},
		{name: "compact", was: reflectfill.Filled[store.CompactResult](), now: compactResult(reflectfill.Filled[store.CompactResult]()),
			zeroWas: store.CompactResult{}, zeroNow: compactResult(store.CompactResult{})},
		{name: "backup job", was: reflectfill.Filled[store.BackupResult](), now: backupResult(reflectfill.Filled[store.BackupResult]()),
			zeroWas: store.BackupResult{}, zeroNow: backupResult(store.BackupResult{})},
		{name: "verify", was: reflectfill.Filled[store.VerifyResult](), now: verifyCheck(reflectfill.Filled[store.VerifyResult]()),
			zeroWas: store.VerifyResult{}, zeroNow: verifyCheck(store.VerifyResult{})},
		{name: "verify backup", was: bv, now: jobs.VerifiedBackup{ID: bv.ID, VerifyCheck: &jobs.VerifyCheck{Files: bv.Files, Bytes: uint64(bv.Bytes),
			Points: bv.Points, Deep: bv.Deep, Duration: bv.Duration}}, zeroWas: store.BackupVerifyResult{},
			zeroNow: jobs.VerifiedBackup{VerifyCheck: &jobs.VerifyCheck{}}},
		{name: "restore", was: reflectfill.Filled[store.RestoreResult](), now: restoreResult(reflectfill.Filled[store.RestoreResult]()),
			zeroWas: store.RestoreResult{}, zeroNow: restoreResult(store.RestoreResult{})},
		{name: "status", was: struct {
			Node    string    `json:"node"`
			Stats   any       `json:"stats"`
			Backups any       `json:"backups,omitempty"`
			At      time.Time `json:"at"`
		}{"n1", st, []store.BackupInfo{bi}, st.LastVerify}, now: storeStatus("n1", st, []store.BackupInfo{bi}, st.LastVerify)},
	} {
		sameJSON(t, c.name, c.was, c.now)
		if c.zeroWas != nil {
			sameJSON(t, c.name+" (zero)", c.zeroWas, c.zeroNow)
		}
	}
}

func sameJSON(t *testing.T, name string, was, now any) {
	t.Helper()
	decode := func(v any) any {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if d := cmp.Diff(dropNullFiles(decode(was)), decode(now)); d != "" {
		t.Errorf("%s: the jobs type encodes differently from the store value (-store +jobs):\n%s", name, d)
	}
}

// dropNullFiles removes every "files": null from a decoded store value: a
// backup's file list, empty, is left out by jobs.BackupSummary where the
// store writes null (a status leaves every file list out: see
// jobs.BackupFileLists). Nothing else may differ.
func dropNullFiles(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "files" && e == nil {
				delete(x, k)
				continue
			}
			x[k] = dropNullFiles(e)
		}
	case []any:
		for i := range x {
			x[i] = dropNullFiles(x[i])
		}
	}
	return v
}

// jobs.StoreStates are the names of store's states, in order.
func TestStoreStatesAreStoresStates(t *testing.T) {
	var names []jobs.StoreState
	for st := store.StateOpen; st.String() != "unknown"; st++ {
		names = append(names, jobs.StoreState(st.String()))
	}
	if !slices.Equal(names, jobs.StoreStates) {
		t.Errorf("jobs.StoreStates = %v; store's states are %v", jobs.StoreStates, names)
	}
}

// A restore uses a backup only by jobs.BackupSummary.Usable, named or not:
// one never verified is refused (permanently, nothing touched), and the
// newest usable one is taken when none is named.
func TestRestoreUsesOnlyUsableBackups(t *testing.T) {
	b := setup(t, nil, "orders")
	b.waitState(t, b.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	b.waitState(t, b.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	s, err := b.reg.Store("orders")
	if err != nil {
		t.Fatal(err)
	}
	backups, err := s.Backups()
	if err != nil || len(backups) != 2 {
		t.Fatalf("backups: %v, %v", backups, err)
	}
	older, newest := backups[1].ID, backups[0].ID
	// The newest backup's verification was never recorded (as when the
	// process stopped right after publishing it): its status file is gone.
	if err := os.Remove(filepath.Join(b.reg.BackupDir(), "orders", "status", newest+".json")); err != nil {
		t.Fatal(err)
	}

	if _, err := usableBackup(s, "nosuch"); !errors.Is(err, store.ErrUnknownBackup) {
		t.Errorf("an unknown backup: %v, want ErrUnknownBackup", err)
	}
	named := b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{BackupID: newest})
	r := b.waitState(t, named.ID, jobs.StateFailed)
	if r.Attempts != 1 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error, "never verified") {
		t.Fatalf("restore of an unverified backup: %d attempts, errors %+v; want one attempt refused as never verified", r.Attempts, r.Errors)
	}
	if h := b.history(t, named.ID); len(h) != 1 || h[0].Status != jobs.StatusFailed {
		t.Fatalf("history of the refused restore: %+v", h)
	}

	latest := b.waitState(t, b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	var res jobs.RestoreResult
	if err := json.Unmarshal(latest.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.BackupID != older {
		t.Fatalf("restore of the newest usable backup used %s; want %s (the newest, %s, is unverified)", res.BackupID, older, newest)
	}
}
