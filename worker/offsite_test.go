package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/s3test"
	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/store"
)

func openTarget(t *testing.T, name, url string) *offsite.Target {
	t.Helper()
	tg, err := offsite.Open(context.Background(), name, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

// publishedTargets is the orders store's published target status.
func publishedTargets(t *testing.T, b *faults) []jobs.TargetStatus {
	t.Helper()
	var st jobs.StoreStatus
	if err := json.Unmarshal([]byte(b.rdb.Get(t.Context(), keyspace.StatsKey("orders")).Val()), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Targets) != 2 {
		t.Fatalf("published targets %+v", st.Targets)
	}
	return st.Targets
}

func withTargets(ts ...*offsite.Target) options {
	return options{worker: func(c *Config) { c.Targets = ts }}
}

func backupResultOf(t *testing.T, r jobs.Record) jobs.BackupResult {
	t.Helper()
	var res jobs.BackupResult
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatalf("backup result %s: %v", r.Result, err)
	}
	return res
}

// A backup job uploads its backup to every target after making it; a
// target that fails does not fail the backup, it is reported; on another
// node with its own Redis and directories (the first machine is gone), a
// restore from the target brings the store back.
func TestBackupGoesOffsiteAndRestoresElsewhere(t *testing.T) {
	s3 := s3test.Start(t)
	good := openTarget(t, "vault", "file://"+t.TempDir())
	flaky := openTarget(t, "flaky", s3.URL(""))
	a := setupFaults(t, withTargets(good, flaky), nil, "orders") // records the notifications dispatched
	s, _ := a.reg.Store("orders")
	for i := range 300 {
		if err := s.Set(fmt.Appendf(nil, "k%04d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	s3.Fail(func(r *http.Request) bool { return r.Method == http.MethodPut })
	var res jobs.BackupResult
	for range 2 { // two backups during the outage
		rec := a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
		res = backupResultOf(t, rec)
		if len(res.Targets) != 2 || !res.Targets[0].Complete || res.Targets[0].Objects == 0 && res.Targets[0].Skipped == 0 || res.Targets[1].Complete || res.Targets[1].Error == "" {
			t.Fatalf("targets %+v; want vault complete, flaky failed and said why", res.Targets)
		}
	}
	// The outage is told once: one event, one notification; the store's
	// published status says since when the flaky target fails.
	if evs := a.eventsOfType(t, jobs.EventBackupTargetFailed); len(evs) != 1 || evs[0].Target != "flaky" || evs[0].Error == "" {
		t.Fatalf("backup.target_failed events %+v; want one, for flaky", evs)
	}
	if notes := a.settled(t); len(notes) != 1 || notes[0].Type != jobs.EventBackupTargetFailed || notes[0].Target != "flaky" {
		t.Fatalf("notifications %+v; want one backup.target_failed for flaky", notes)
	}
	st := publishedTargets(t, a)
	if st[0].BackupID != res.Backup.ID || !st[0].FailingSince.IsZero() || st[1].FailingSince.IsZero() || st[1].BackupID != "" {
		t.Fatalf("published targets %+v; want vault at the last backup, flaky failing with none", st)
	}
	// The flaky target is back: the next backup sends it what it lacks.
	s3.Fail(nil)
	rec := a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	if res := backupResultOf(t, rec); !res.Targets[1].Complete || res.Targets[0].Skipped == 0 {
		t.Fatalf("third backup's targets %+v; want flaky caught up, vault sent only what changed", res.Targets)
	}
	if st := publishedTargets(t, a); !st[1].FailingSince.IsZero() || st[1].BackupID != backupResultOf(t, rec).Backup.ID {
		t.Fatalf("published targets after the outage %+v", st)
	}

	b := setupWith(t, withTargets(good), nil, "orders")
	b.waitState(t, b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{Target: "vault"}).ID, jobs.StateSucceeded)
	fresh, _ := b.reg.Store("orders")
	n := 0
	if err := fresh.Scan(t.Context(), nil, nil, func(_, _ []byte) error { n++; return nil }); err != nil || n != 300 {
		t.Fatalf("restored on another node: %d keys, %v; want 300", n, err)
	}
	// An unknown target fails at once, naming it, and is not retried.
	rec = b.waitState(t, b.enqueue(t, jobs.KindRestore, "orders", jobs.Params{Target: "nope"}).ID, jobs.StateFailed)
	if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0].Error, `unknown backup target "nope"`) {
		t.Fatalf("restore from an unknown target: %+v; want one attempt naming the target", rec.Errors)
	}
}

// A restore with no backup named takes the newest usable backup across
// the local directory and the targets: a backup held locally but marked
// bad is not taken from the target's index either (the local copy is the
// one a restore would use), so the older good one is restored, as
// without targets. Named with its target, the target's good copy is
// restored instead of the bad local one.
func TestRestoreSkipsABadLocalBackupTheTargetAlsoLists(t *testing.T) {
	vault := openTarget(t, "vault", "file://"+t.TempDir())
	a := setupWith(t, withTargets(vault), nil, "orders")
	s, _ := a.reg.Store("orders")
	if err := s.Set([]byte("k"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	first := backupResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)).Backup.ID
	if err := s.Set([]byte("k"), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	second := backupResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded)).Backup.ID
	// The second backup's private MANIFEST copy is damaged; a verify marks
	// the backup bad.
	info, err := s.LookupBackup(second)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range info.Files {
		if strings.HasPrefix(f.Name, "MANIFEST-") {
			path := filepath.Join(a.reg.BackupDir(), "orders", "backups", second, f.Name)
			if err := os.WriteFile(path, []byte("damaged"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.waitState(t, a.enqueue(t, jobs.KindVerify, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	if info, _ := s.LookupBackup(second); !info.Bad {
		t.Fatal("the damaged backup was not marked bad")
	}
	rec := a.waitState(t, a.enqueue(t, jobs.KindRestore, "orders", jobs.Params{}).ID, jobs.StateSucceeded)
	var res jobs.RestoreResult
	if err := json.Unmarshal(rec.Result, &res); err != nil || res.BackupID != first {
		t.Fatalf("restored %q (%v); want the good %s", res.BackupID, err, first)
	}
	// Asked for by name from the target, the second backup is read from
	// the target, whose copy is good, not from the bad local one.
	rec = a.waitState(t, a.enqueue(t, jobs.KindRestore, "orders", jobs.Params{Target: "vault", BackupID: second}).ID, jobs.StateSucceeded)
	if err := json.Unmarshal(rec.Result, &res); err != nil || res.BackupID != second {
		t.Fatalf("restored %q (%v) from the target; want %s", res.BackupID, err, second)
	}
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "v2" {
		t.Fatalf("after restoring %s from the target: %q %v", second, v, err)
	}
}

// A target keeps what the store's retention keeps: the backup job prunes
// it after each upload, and says which backups it dropped.
func TestTargetFollowsRetention(t *testing.T) {
	vault := openTarget(t, "vault", "file://"+t.TempDir())
	o := withTargets(vault)
	o.store = func(c *store.Config) { c.Retention = store.Retention{Last: 1, Daily: 1} }
	a := setupWith(t, o, nil, "orders")
	first := backupResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded))
	second := backupResultOf(t, a.waitState(t, a.enqueue(t, jobs.KindBackup, "orders", jobs.Params{}).ID, jobs.StateSucceeded))
	if p := second.Targets[0].Pruned; len(p) != 1 || p[0] != first.Backup.ID {
		t.Fatalf("pruned on the target: %v; want the first backup %s", p, first.Backup.ID)
	}
	if entries, err := vault.Backups(t.Context(), "orders"); err != nil || len(entries) != 1 || entries[0].ID != second.Backup.ID {
		t.Fatalf("the target lists %+v, %v; want only %s", entries, err, second.Backup.ID)
	}
}

// After the recipients rotate, a backup asked to reencrypt rewrites the
// store's backups on the encrypted target (the older one uploaded to the
// old recipient too); then the new identity alone reads every one.
func TestBackupReencrypts(t *testing.T) {
	ctx := t.Context()
	url := "file://" + t.TempDir()
	old, _ := age.GenerateX25519Identity()
	next, _ := age.GenerateX25519Identity()
	key := bytes.Repeat([]byte("k"), 32)
	before, err := offsite.Open(ctx, "vault", url, &offsite.Encryption{Recipients: []age.Recipient{old.Recipient()}, NamingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	rotated, err := offsite.Open(ctx, "vault", url, &offsite.Encryption{Recipients: []age.Recipient{next.Recipient()},
		Identities: []age.Identity{old, next}, NamingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer rotated.Close()
	b := setupFaults(t, withTargets(rotated), nil, "orders")
	s, _ := b.reg.Store("orders")
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	first, err := s.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Upload(ctx, s, first.Backup.BackupManifest, nil); err != nil {
		t.Fatal(err)
	}
	rec := b.waitState(t, b.enqueue(t, jobs.KindBackup, "orders", jobs.Params{Reencrypt: true}).ID, jobs.StateSucceeded)
	res := backupResultOf(t, rec)
	if len(res.Targets) != 1 || res.Targets[0].ReencryptedBackups != 2 || res.Targets[0].ReencryptedObjects == 0 {
		t.Fatalf("targets %+v; want both backups reencrypted", res.Targets)
	}
	only, err := offsite.Open(ctx, "vault", url, &offsite.Encryption{Recipients: []age.Recipient{next.Recipient()}, Identities: []age.Identity{next}})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	for _, id := range []string{first.Backup.ID, res.Backup.ID} {
		m, err := only.Manifest(ctx, "orders", id)
		if err != nil {
			t.Fatalf("backup %s with the new identity alone: %v", id, err)
		}
		for _, f := range m.Files {
			r, err := only.OpenObject(ctx, f)
			if err == nil {
				_, err = io.Copy(io.Discard, r)
				r.Close()
			}
			if err != nil {
				t.Fatalf("object %s of %s with the new identity alone: %v", f.Name, id, err)
			}
		}
	}
	// A store on a node whose targets are not encrypted: refused, for good,
	// before any backup is made.
	c := setupFaults(t, withTargets(openTarget(t, "plain", "file://"+t.TempDir())), nil, "orders")
	failed := c.waitState(t, c.enqueue(t, jobs.KindBackup, "orders", jobs.Params{Reencrypt: true}).ID, jobs.StateFailed)
	if failed.Attempts != 1 || !strings.Contains(failed.Errors[0].Error, "reencrypt orders: no backup target is encrypted") || strings.Contains(failed.Errors[0].Error, "skip retry") {
		t.Fatalf("reencrypt without an encrypted target: %+v", failed)
	}
	if cs, _ := c.reg.Store("orders"); cs != nil {
		if bs, _ := cs.Backups(); len(bs) != 0 {
			t.Fatalf("a refused reencrypt made %d local backup(s) first", len(bs))
		}
	}
}
