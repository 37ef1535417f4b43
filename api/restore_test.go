package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// operatorPost sends body to path as the operator, as JSON, and returns
// the answer with its error, if it is one.
func operatorPost(t *testing.T, h http.Handler, path, body string) (*httptest.ResponseRecorder, errorAnswer) {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secOperator)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var a errorAnswer
	if rec.Code >= 400 {
		_ = json.Unmarshal(rec.Body.Bytes(), &a)
	}
	return rec, a
}

// A restore is refused before any job is made unless jobs'
// BackupSummary.Usable accepts its backup: the one it names, or the newest
// usable one when it names none. An explicit backup id gets no exemption:
// one never verified is a 409, as one marked bad.
func TestRestoreTakesOnlyUsableBackups(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	ctx := t.Context()
	at := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	publish := func(backups ...jobs.BackupSummary) {
		t.Helper()
		publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreCorrupt}, Backups: backups, At: at,
			Targets: []jobs.TargetStatus{{Target: "vault"}}})
	}
	restore := func(body string) (int, string) {
		t.Helper()
		rec, a := operatorPost(t, h, "/api/admin/restore/orders", body)
		if rec.Code == 202 {
			// One restore per store at a time: cancel it for the next case.
			var e enqueued
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if _, err := jobsdb.NewClient(rdb, jobs.ClientConfig{}).Cancel(ctx, e.ID, "t"); err != nil {
				t.Fatal(err)
			}
			return rec.Code, e.Params.BackupID
		}
		return rec.Code, a.Error
	}

	unverified := jobs.BackupSummary{ID: "20261122T030000.000Z-000004", CreatedAt: at.Add(3 * time.Hour)}
	bad := jobs.BackupSummary{ID: "20261122T020000.000Z-000003", CreatedAt: at.Add(2 * time.Hour), VerifiedAt: at, Bad: true, Error: "checksum"}
	good := jobs.BackupSummary{ID: "20261122T010000.000Z-000002", CreatedAt: at.Add(time.Hour), VerifiedAt: at.Add(time.Hour)}

	publish(unverified, bad)
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"backup_id":"` + unverified.ID + `"}`, 409, "no_backup"},
		{`{"backup_id":"` + bad.ID + `"}`, 409, "no_backup"},
		{`{}`, 409, "no_backup"},
		{`{"backup_id":"20261122T000000.000Z-000001"}`, 404, "unknown_backup"},
		// From a backup target: the API checks that the owner has it; the
		// owner checks the backup when the job runs.
		{`{"target":"vault"}`, 202, ""},
		{`{"target":"vault","backup_id":"20261122T000000.000Z-000001"}`, 202, "20261122T000000.000Z-000001"},
		{`{"target":"../x"}`, 400, "invalid_request"},
		{`{"target":"nope"}`, 404, "unknown_target"},
	} {
		if code, got := restore(c.body); code != c.code || got != c.want {
			t.Errorf("restore %s with only an unverified and a bad backup: %d %s, want %d %s", c.body, code, got, c.code, c.want)
		}
	}

	publish(unverified, bad, good)
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"backup_id":"` + good.ID + `"}`, 202, good.ID},
		{`{}`, 202, ""}, // the worker takes the newest usable one when it runs
		{`{"backup_id":"` + unverified.ID + `"}`, 409, "no_backup"},
	} {
		if code, got := restore(c.body); code != c.code || got != c.want {
			t.Errorf("restore %s: %d %s, want %d %s", c.body, code, got, c.code, c.want)
		}
	}

	// No usable local backup, but the target holds one (the local disk
	// lost them): accepted, the worker takes the target's.
	publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreCorrupt}, At: at,
		Targets: []jobs.TargetStatus{{Target: "vault", BackupID: good.ID, BackupAt: good.CreatedAt}}})
	if code, got := restore(`{}`); code != 202 {
		t.Errorf("restore with only a target's backup: %d %s, want 202", code, got)
	}
}

// An adoption is refused, with no job made, unless its node is up and the
// store's owner is gone: 404 for a node never seen, 409 node_down,
// store_exists, store_held (the owner's lease, without force; its node
// up, even with force); 400 for a body without a node or target. Accepted,
// the job is queued for the adopting node, not the owner.
func TestAdoptRefusesWhileTheOwnerMayServe(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	ctx := t.Context()
	beat := func(node string, stores ...string) {
		t.Helper()
		if err := jobsdb.NodeUp(ctx, rdb, jobs.NodeInfo{Node: node, Stores: stores, At: time.Now()}, time.Minute, 100); err != nil {
			t.Fatal(err)
		}
	}
	beat("n1", "orders")
	beat("n2", "users")
	if _, ok, err := jobsdb.ClaimLease(ctx, rdb, "orders", jobs.Lease{Node: "n1", Host: "h1", Instance: "i1"}, time.Minute); err != nil || !ok {
		t.Fatal(err)
	}
	rdb.SAdd(ctx, "storekeeper:nodes", "n3")
	adopt := func(body string) (int, string, jobs.Record) {
		t.Helper()
		rec, a := operatorPost(t, h, "/api/admin/adopt/orders", body)
		var e enqueued
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return rec.Code, a.Error, e.Record
	}
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"target":"vault"}`, 400, "invalid_request"},
		{`{"node":"n2"}`, 400, "invalid_request"},
		{`{"node":"n2","target":"../x"}`, 400, "invalid_request"},
		{`{"node":"n9","target":"vault"}`, 404, "unknown_node"},
		{`{"node":"n3","target":"vault"}`, 409, "node_down"},
		{`{"node":"n1","target":"vault"}`, 409, "store_exists"},
		{`{"node":"n2","target":"vault"}`, 409, "store_held"},
		{`{"node":"n2","target":"vault","force":true}`, 409, "store_held"}, // n1 is up
	} {
		if code, got, _ := adopt(c.body); code != c.code || got != c.want {
			t.Errorf("adopt %s: %d %s, want %d %s", c.body, code, got, c.code, c.want)
		}
	}
	// n1's machine dies: its heartbeat goes, its lease is still there.
	rdb.Del(ctx, "storekeeper:node:n1")
	if code, got, _ := adopt(`{"node":"n2","target":"vault"}`); code != 409 || got != "store_held" {
		t.Errorf("adopt without force of a held lease: %d %s", code, got)
	}
	code, got, r := adopt(`{"node":"n2","target":"vault","backup_id":"20261122T000000.000Z-000001","force":true}`)
	if code != 202 || r.Kind != jobs.KindAdopt || r.Node != "n2" || r.Queue != jobs.NodeQueue("n2") || r.Params.Node != "n2" || !r.Params.Force ||
		r.Params.BackupID != "20261122T000000.000Z-000001" {
		t.Fatalf("adopt with force once n1 is down: %d %s %+v", code, got, r)
	}
}

// A restore to a moment: an RFC 3339 time, not in the future, not with a
// backup or target, and only for a store whose node ships its commit log
// (its published targets show a shipping lag).
func TestRestoreToAMoment(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	at := time.Now().Add(-time.Hour).UTC()
	publish := func(shipping bool) {
		t.Helper()
		ts := jobs.TargetStatus{Target: "vault"}
		if shipping {
			lag := time.Duration(0)
			ts.ShipLag = &lag
		}
		publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}, At: at, Targets: []jobs.TargetStatus{ts}})
	}
	restore := func(body string) (int, string, jobs.Params) {
		t.Helper()
		rec, a := operatorPost(t, h, "/api/admin/restore/orders", body)
		if rec.Code == 202 {
			var e enqueued
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			return rec.Code, "", e.Params
		}
		return rec.Code, a.Error, jobs.Params{}
	}
	moment := at.Format(time.RFC3339Nano)
	publish(false)
	if code, got, _ := restore(`{"at":"` + moment + `"}`); code != 409 || got != "not_shipping" {
		t.Fatalf("restore to a moment without shipping: %d %s", code, got)
	}
	publish(true)
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"at":"yesterday"}`, 400, "invalid_request"},
		{`{"at":"` + time.Now().Add(time.Hour).Format(time.RFC3339) + `"}`, 400, "invalid_request"},
		{`{"at":"` + moment + `","backup_id":"20261122T000000.000Z-000001"}`, 400, "invalid_request"},
		{`{"at":"` + moment + `","target":"vault"}`, 400, "invalid_request"},
	} {
		if code, got, _ := restore(c.body); code != c.code || got != c.want {
			t.Errorf("restore %s: %d %s, want %d %s", c.body, code, got, c.code, c.want)
		}
	}
	code, _, p := restore(`{"at":"` + moment + `"}`)
	if code != 202 || !p.At.Equal(at) || p.BackupID != "" {
		t.Fatalf("restore to %s: %d, params %+v", moment, code, p)
	}
}

// A moment before the store's commit log starts (its status's
// log_start) is refused for a restore and a drill alike, with no job
// made: the job could only fail, and notify. A moment after it, and any
// moment while the status does not say where the log starts (a restored
// store's shipper has not read its parents' records yet), is left to the
// job.
func TestMomentBeforeTheLogStartIsRefused(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	logStart := time.Now().Add(-time.Hour).UTC()
	publish := func(start time.Time) {
		t.Helper()
		lag := time.Duration(0)
		publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}, At: time.Now(),
			Targets: []jobs.TargetStatus{{Target: "vault", ShipLag: &lag}}, LogStart: start})
	}
	post := func(kind, at string) (int, string) {
		t.Helper()
		rec, a := operatorPost(t, h, "/api/admin/"+kind+"/orders", `{"at":"`+at+`"}`)
		if a.Error == "before_log_start" && !strings.Contains(a.Message, logStart.Format(time.RFC3339Nano)) {
			t.Errorf("%s at %s: the refusal does not say where the log starts: %s", kind, at, a.Message)
		}
		return rec.Code, a.Error
	}
	before := logStart.Add(-time.Minute).Format(time.RFC3339Nano)
	after := logStart.Add(time.Minute).Format(time.RFC3339Nano)
	publish(logStart)
	req := httptest.NewRequest("GET", "/api/stores/orders", nil)
	req.Header.Set("Authorization", "Bearer "+secOperator)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var view jobs.StoreView
	if err := json.Unmarshal(rec.Body.Bytes(), &view); err != nil || !view.LogStart.Equal(logStart) {
		t.Errorf("the store's view: log_start %v, want %v (%d %s, %v)", view.LogStart, logStart, rec.Code, rec.Body, err)
	}
	for _, kind := range []string{"restore", "drill"} {
		if code, got := post(kind, before); code != 409 || got != "before_log_start" {
			t.Errorf("%s to a moment before the log starts: %d %s, want 409 before_log_start", kind, code, got)
		}
		if code, got := post(kind, "2001-01-01T00:00:00Z"); code != 409 || got != "before_log_start" {
			t.Errorf("%s to 2001: %d %s, want 409 before_log_start", kind, code, got)
		}
		if code, got := post(kind, after); code != 202 {
			t.Errorf("%s to a moment after the log starts: %d %s, want 202", kind, code, got)
		}
	}
	// The status does not say where the log starts (restored, its
	// parents' records not read yet). (The
	// restore accepted above holds the store's restore lock: free it.)
	publish(time.Time{})
	if err := rdb.Del(t.Context(), keyspace.RestoreLockKey("orders")).Err(); err != nil {
		t.Fatal(err)
	}
	if code, got := post("restore", before); code != 202 {
		t.Errorf("restore to a moment the status cannot rule out: %d %s, want 202", code, got)
	}
	// A drill at a moment needs the log shipped, as a restore does.
	publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}, At: time.Now(),
		Targets: []jobs.TargetStatus{{Target: "vault"}}})
	if code, got := post("drill", after); code != 409 || got != "not_shipping" {
		t.Errorf("drill to a moment without shipping: %d %s, want 409 not_shipping", code, got)
	}
}

// A backup with reencrypt is refused, with no job made, when the store's
// node publishes that none of its targets is encrypted; accepted when one
// is, when a node does not say, and before the status is published.
func TestReencryptWithoutAnEncryptedTargetIsRefused(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	post := func(body string) (int, string) {
		t.Helper()
		rec, a := operatorPost(t, h, "/api/admin/backup/orders", body)
		return rec.Code, a.Error
	}
	status := func(targets ...jobs.TargetStatus) {
		t.Helper()
		publishStatus(t, rdb, jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreOpen}, At: time.Now(), Targets: targets})
	}
	no, yes := false, true
	if err := rdb.HSet(t.Context(), keyspace.StoresKey, "orders", "n1").Err(); err != nil { // owned, no status yet
		t.Fatal(err)
	}
	if code, got := post(`{"reencrypt":true}`); code != 202 {
		t.Errorf("reencrypt before the status is published: %d %s, want 202 (the job decides)", code, got)
	}
	status(jobs.TargetStatus{Target: "vault", Encrypted: &no})
	if code, got := post(`{"reencrypt":true}`); code != 409 || got != "nothing_to_reencrypt" {
		t.Errorf("reencrypt with no encrypted target: %d %s, want 409 nothing_to_reencrypt", code, got)
	}
	status()
	if code, got := post(`{"reencrypt":true}`); code != 409 || got != "nothing_to_reencrypt" {
		t.Errorf("reencrypt with no target at all: %d %s, want 409 nothing_to_reencrypt", code, got)
	}
	if code, got := post(`{}`); code != 202 {
		t.Errorf("a plain backup: %d %s, want 202", code, got)
	}
	status(jobs.TargetStatus{Target: "vault", Encrypted: &no}, jobs.TargetStatus{Target: "safe", Encrypted: &yes})
	if code, got := post(`{"reencrypt":true}`); code != 202 {
		t.Errorf("reencrypt with an encrypted target: %d %s, want 202", code, got)
	}
	status(jobs.TargetStatus{Target: "vault"})
	if code, got := post(`{"reencrypt":true}`); code != 202 {
		t.Errorf("reencrypt on a node that does not say: %d %s, want 202", code, got)
	}
}
