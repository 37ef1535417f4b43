package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

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
		req := httptest.NewRequest("POST", "/api/admin/restore/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secOperator)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 202 {
			// One restore per store at a time: cancel it for the next case.
			var e enqueued
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if _, err := jobsdb.NewClient(rdb, jobs.ClientConfig{}).Cancel(ctx, e.ID, "t"); err != nil {
				t.Fatal(err)
			}
			return rec.Code, e.Params.BackupID
		}
		var a errorAnswer
		_ = json.Unmarshal(rec.Body.Bytes(), &a)
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
		req := httptest.NewRequest("POST", "/api/admin/adopt/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secOperator)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e enqueued
		var a errorAnswer
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		_ = json.Unmarshal(rec.Body.Bytes(), &a)
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
		req := httptest.NewRequest("POST", "/api/admin/restore/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secOperator)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 202 {
			var e enqueued
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			return rec.Code, "", e.Params
		}
		var a errorAnswer
		_ = json.Unmarshal(rec.Body.Bytes(), &a)
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
